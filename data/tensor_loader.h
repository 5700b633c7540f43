// Batches of samples held in memory as tensors (synthetic data, features computed elsewhere, an
// extension's own data): rows of x with their labels, shuffled per epoch from a seed.
#pragma once
#include <cstdint>

#include "data/batch.h"

namespace mel::data {

class TensorLoader : public BatchSource {
 public:
  // x: [N, ...] of any dtype; y: i64 [N] (checked). The last batch may be short.
  TensorLoader(Tensor x, Tensor y, int64_t batch_size, bool shuffle = true, uint64_t seed = 0);
  void start_epoch(int64_t epoch) override;
  bool next(Batch& out) override;
  int64_t num_batches() const override { return (n_ + batch_ - 1) / batch_; }
  int64_t num_samples() const override { return n_; }

 private:
  Tensor x_, y_;
  int64_t n_ = 0, batch_ = 1;
  bool shuffle_ = true;
  uint64_t seed_ = 0;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0, index_ = 0;
};

}  // namespace mel::data
