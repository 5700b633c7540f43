#include "data/tensor_loader.h"

#include <algorithm>

#include "core/factory.h"
#include "core/ops_index.h"

namespace mel::data {

TensorLoader::TensorLoader(Tensor x, Tensor y, int64_t batch_size, bool shuffle, uint64_t seed)
    : x_(std::move(x)), y_(std::move(y)), batch_(batch_size), shuffle_(shuffle), seed_(seed) {
  MEL_CHECK(x_.defined() && x_.dim() >= 1, "TensorLoader: x must have a sample dimension");
  MEL_CHECK(y_.defined() && y_.dim() == 1 && y_.dtype() == DType::i64,
            "TensorLoader: labels must be i64 [N], got {} {}",
            y_.defined() ? dtype_name(y_.dtype()) : "undefined",
            y_.defined() ? shape_str(y_.shape()) : "");
  MEL_CHECK(x_.shape()[0] == y_.shape()[0],
            "TensorLoader: {} samples in x (shape {}) but {} labels", x_.shape()[0],
            shape_str(x_.shape()), y_.shape()[0]);
  MEL_CHECK(batch_ >= 1, "TensorLoader: batch size must be >= 1, got {}", batch_);
  x_ = x_.detach().contiguous();
  y_ = y_.detach().contiguous();
  n_ = x_.shape()[0];
  start_epoch(0);
}

void TensorLoader::start_epoch(int64_t epoch) {
  order_ = epoch_order(n_, seed_, epoch, shuffle_);
  cursor_ = 0;
  index_ = 0;
}

bool TensorLoader::next(Batch& out) {
  if (cursor_ >= n_) return false;
  const int64_t end = std::min(n_, cursor_ + batch_);
  std::vector<int64_t> rows(order_.begin() + cursor_, order_.begin() + end);
  const Tensor idx = tensor_i64(rows, {end - cursor_});
  out.x = index_select(x_, 0, idx);
  out.y = index_select(y_, 0, idx);
  out.y_coarse = Tensor();
  out.index = index_++;
  cursor_ = end;
  return true;
}

}  // namespace mel::data
