// Joining and indexing: concat, stack, index_select, gather, one_hot, embedding lookup.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mel {

Tensor concat(const std::vector<Tensor>& ts, int64_t dim);
Tensor stack(const std::vector<Tensor>& ts, int64_t dim);
// index: 1-D i64/i32 with values in [0, x.size(dim)).
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out[i][j][k] = x[i][index[i][j][k]][k] (dim = 1); index has x's rank and sizes <= x's elsewhere.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// labels (integer, any shape) -> labels.shape + [num_classes]; not differentiable.
Tensor one_hot(const Tensor& labels, int64_t num_classes, DType dtype = DType::i64);
// weight: [num_embeddings, dim]; indices: integer, any shape -> indices.shape + [dim].
Tensor embedding(const Tensor& weight, const Tensor& indices);

}  // namespace mel
