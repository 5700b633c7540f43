// A batch of samples and the interface every batch producer implements (image loaders, token
// windows, in-memory tensors), so that the training engine runs over any of them.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mel::data {

struct Batch {
  Tensor x;           // the inputs, e.g. f32 [B, C, H, W], normalised and augmented
  Tensor y;           // i64 [B] targets
  Tensor y_coarse;    // i64 [B] or undefined
  int64_t index = 0;  // batch index within the epoch
};

// Epochs of batches. An epoch's batches must be a pure function of the epoch number (and the
// source's own seed), so that a resumed run sees the same data as an uninterrupted one.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Restarts at the first batch of `epoch`.
  virtual void start_epoch(int64_t epoch) = 0;
  // The next batch of the epoch; false at its end.
  virtual bool next(Batch& out) = 0;
  virtual int64_t num_batches() const = 0;
  virtual int64_t num_samples() const = 0;
};

// The sample order of `epoch`: 0..n-1, or a permutation that is a pure function of (seed, epoch)
// (Fisher-Yates over SplitMix64, the same with every standard library).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

}  // namespace mel::data
