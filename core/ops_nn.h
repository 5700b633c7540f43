// Neural-network functions on tensors: softmax, log_softmax and cross-entropy from logits.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mel {

Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

enum class Reduction { none, mean, sum };

struct CrossEntropyOptions {
  Reduction reduction = Reduction::mean;
  double label_smoothing = 0.0;  // in [0, 1]
  int64_t ignore_index = -100;   // rows with this label contribute nothing (mean over the rest)
};

// logits: [N, C] floating; labels: [N] i64 (or i32) in [0, C) or ignore_index, on the logits'
// device. On the CPU a label out of range is an error; on a GPU the labels are not read back
// (that would stall the stream), so such a label gives its row a NaN loss and NaN gradients.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options = {});

}  // namespace mel
