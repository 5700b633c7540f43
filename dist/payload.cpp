#include "dist/payload.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "core/autograd.h"
#include "core/factory.h"
#include "core/ops_elementwise.h"

namespace mel::dist {

std::string describe(DType dtype, const Shape& shape) {
  return fmt::format("{} {}", dtype_name(dtype), shape_str(shape));
}

void check_tensor(const Communicator& comm, const Tensor& t, const char* op) {
  MEL_CHECK(t.defined(), "{} ({} rank {}): the tensor is undefined", op, comm.backend(),
            comm.rank());
  MEL_CHECK(t.device() == comm.device(),
            "{} ({} rank {}): the tensor is on {} but this communicator moves tensors on {}", op,
            comm.backend(), comm.rank(), t.device().str(), comm.device().str());
}

Bytes to_bytes(const Tensor& t) {
  const Tensor c = t.detach().contiguous();
  Bytes b(c.nbytes());
  if (!b.empty()) std::memcpy(b.data(), c.data_ptr(), b.size());
  return b;
}

void from_bytes(const Bytes& bytes, Tensor& t) {
  MEL_CHECK(t.is_contiguous(), "dist: the receiving tensor {} must be contiguous",
            describe(t.dtype(), t.shape()));
  MEL_CHECK(bytes.size() == t.nbytes(), "dist: {} bytes arrived for {} ({} bytes)", bytes.size(),
            describe(t.dtype(), t.shape()), t.nbytes());
  if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  if (t.impl()->storage) t.impl()->storage->bump_version();
}

void check_match(const char* op, int src, DType dtype, const Shape& shape, const Tensor& t) {
  MEL_CHECK(dtype == t.dtype() && shape == t.shape(),
            "{}: rank {} sent {} but the receiving tensor is {}", op, src, describe(dtype, shape),
            describe(t.dtype(), t.shape()));
}

void check_bytes(size_t bytes, const Tensor& t, int rank, const char* op) {
  MEL_CHECK(bytes == t.nbytes(),
            "{}: rank {} contributed {} bytes but this rank's tensor {} has {} (every rank needs "
            "the same shape and dtype)",
            op, rank, bytes, describe(t.dtype(), t.shape()), t.nbytes());
}

void reduce_gathered(const Communicator&, const std::vector<Bytes>& all, Tensor& t) {
  autograd::NoGradGuard ng;
  Tensor sum = empty(t.shape(), t.dtype());
  from_bytes(all[0], sum);
  for (size_t r = 1; r < all.size(); ++r) {
    Tensor part = empty(t.shape(), t.dtype());
    from_bytes(all[r], part);
    sum = add(sum, part);
  }
  from_bytes(to_bytes(sum), t);
}

Tensor stack_gathered(const std::vector<Bytes>& all, const Tensor& like) {
  Shape shape = like.shape();
  shape.insert(shape.begin(), static_cast<int64_t>(all.size()));
  Tensor out = empty(shape, like.dtype());
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  for (const Bytes& b : all) {
    if (!b.empty()) std::memcpy(dst, b.data(), b.size());
    dst += b.size();
  }
  return out;
}

Bytes encode_ints(const std::vector<int64_t>& values) {
  Bytes b(values.size() * sizeof(int64_t));
  if (!b.empty()) std::memcpy(b.data(), values.data(), b.size());
  return b;
}

std::vector<int64_t> decode_ints(const Bytes& bytes) {
  std::vector<int64_t> v(bytes.size() / sizeof(int64_t));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * sizeof(int64_t));
  return v;
}

SplitGroup split_group(const std::vector<Bytes>& all, int rank, int color) {
  // (key, old rank) of every member of `color`, in the new order.
  std::vector<std::pair<int64_t, int>> members;
  for (size_t r = 0; r < all.size(); ++r) {
    const auto ck = decode_ints(all[r]);
    if (ck.size() == 2 && ck[0] == color) members.emplace_back(ck[1], static_cast<int>(r));
  }
  std::sort(members.begin(), members.end());
  SplitGroup g;
  g.size = static_cast<int>(members.size());
  for (int i = 0; i < g.size; ++i) {
    if (members[static_cast<size_t>(i)].second == rank) g.rank = i;
  }
  return g;
}

}  // namespace mel::dist
