#include "core/iter.h"

namespace mel {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1) {
      fail(
          "{}: shapes {} and {} cannot be broadcast together (dimension {}: {} vs {}; sizes "
          "must match or one must be 1)",
          op, shape_str(a), shape_str(b), i, da, db);
    }
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_strides(const Tensor& t, const Shape& shape, const char* op) {
  const Shape& ts = t.shape();
  MEL_CHECK(ts.size() <= shape.size(), "{}: cannot broadcast shape {} to {}", op, shape_str(ts),
            shape_str(shape));
  Shape st(shape.size(), 0);
  const size_t lead = shape.size() - ts.size();
  for (size_t i = 0; i < ts.size(); ++i) {
    if (ts[i] == shape[lead + i]) {
      st[lead + i] = t.strides()[i];
    } else {
      MEL_CHECK(ts[i] == 1, "{}: cannot broadcast shape {} to {}", op, shape_str(ts),
                shape_str(shape));
    }
  }
  return st;
}

void check_defined(const char* op, const Tensor& t, const char* what) {
  MEL_CHECK(t.defined(), "{}: {} is an undefined tensor", op, what);
}

void check_cpu(const char* op, const Tensor& t) {
  MEL_CHECK(t.device().is_cpu(), "{}: tensor on {} but this operation only runs on the cpu", op,
            t.device().str());
}

void check_same(const char* op, const std::vector<Tensor>& ts, bool same_dtype) {
  for (size_t i = 0; i < ts.size(); ++i) check_defined(op, ts[i], "an input");
  for (size_t i = 1; i < ts.size(); ++i) {
    if (ts[i].device() != ts[0].device()) {
      fail("{}: tensors are on different devices ({} and {}); move them with .to(device)", op,
           ts[0].device().str(), ts[i].device().str());
    }
    if (same_dtype && ts[i].dtype() != ts[0].dtype()) {
      fail("{}: dtypes differ ({} with shape {} and {} with shape {}); convert one with .to(dtype)",
           op, dtype_name(ts[0].dtype()), shape_str(ts[0].shape()), dtype_name(ts[i].dtype()),
           shape_str(ts[i].shape()));
    }
  }
}

}  // namespace mel
