#include "core/ops_index.h"

#include <string>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/factory.h"
#include "core/iter.h"
#include "kernels/cpu/index.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/index.h"
#endif

namespace mel {

using autograd::GradMask;

namespace {

// Half types move through the f32 kernels and convert back (autograd flows through both
// conversions), as in the elementwise ops.
bool upcast(const Tensor& t) {
  return is_half(t.dtype());
}

// An i32/i64 index tensor as contiguous i64 with no history; anything else is rejected.
Tensor as_index(const Tensor& t, const char* op, const char* what) {
  check_defined(op, t, what);
  MEL_CHECK(t.dtype() == DType::i64 || t.dtype() == DType::i32,
            "{}: {} must be an integer tensor (i32 or i64), got {} with shape {}", op, what,
            dtype_name(t.dtype()), shape_str(t.shape()));
  return t.detach().to(DType::i64).contiguous();
}

// The index of an op must live where its input does (no implicit transfers, as everywhere else).
void check_index_device(const char* op, const Tensor& x, const Tensor& index, const char* what) {
  MEL_CHECK(index.device() == x.device(),
            "{}: the input is on {} but the {} is on {}; move it with .to(device)", op,
            x.device().str(), what, index.device().str());
}

// "2" for a 1-D tensor, "[1, 0, 2]" otherwise: the coordinates of element `linear` of `shape`.
std::string position_str(const Shape& shape, int64_t linear) {
  if (shape.size() == 1) return std::to_string(linear);
  Shape coord(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    coord[d] = linear % shape[d];
    linear /= shape[d];
  }
  return shape_str(coord);
}

// Position of the first index outside [0, limit), or -1 when all are valid. `idx` is contiguous
// i64 (from as_index). Checked here, before any kernel runs, because kernels trust their indices.
// On the GPU the position is read back (a synchronisation, as any value read back is). Inside a
// CUDA-graph capture nothing can be read back, so the check is skipped there; the CUDA kernels
// never access memory through an invalid index (gathers give 0, scatters drop it), so a bad index
// then yields wrong values, not a fault.
int64_t first_out_of_range(const Tensor& idx, int64_t limit) {
  const int64_t n = idx.numel();
  if (n == 0 || is_capturing(idx.device())) return -1;
  Tensor first = empty({1}, DType::i64, idx.device());
  MEL_KERNEL(idx.device(), find_out_of_range, idx.data<int64_t>(), n, limit, first.data<int64_t>());
  const int64_t pos = first.to(Device::cpu()).data<int64_t>()[0];
  return pos < n ? pos : -1;
}

// idx's element i (contiguous i64) on the host, for error messages.
int64_t index_value(const Tensor& idx, int64_t i) {
  if (idx.device().is_cpu()) return idx.data<int64_t>()[i];
  int64_t v = 0;
  MEL_CUDA_ONLY(
      cuda_context(idx.device().index).copy_to_host(&v, idx.data<int64_t>() + i, sizeof v));
  return v;
}

int64_t prod(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= s[i];
  return p;
}

// Non-empty, all defined, one dtype, one device; messages name the offending tensor.
void check_list(const char* op, const std::vector<Tensor>& ts) {
  MEL_CHECK(!ts.empty(), "{}: expected a non-empty list of tensors", op);
  for (size_t i = 0; i < ts.size(); ++i) {
    MEL_CHECK(ts[i].defined(), "{}: tensor {} is undefined", op, i);
  }
  for (size_t i = 1; i < ts.size(); ++i) {
    MEL_CHECK(ts[i].dtype() == ts[0].dtype(),
              "{}: tensor {} has dtype {} but tensor 0 has {}; convert one with .to(dtype)", op, i,
              dtype_name(ts[i].dtype()), dtype_name(ts[0].dtype()));
    MEL_CHECK(ts[i].device() == ts[0].device(),
              "{}: tensor {} is on {} but tensor 0 is on {}; move them with .to(device)", op, i,
              ts[i].device().str(), ts[0].device().str());
  }
}

kernels::cpu::GatherGeom gather_geom(const Shape& index_shape, const Shape& x_strides, int64_t d) {
  kernels::cpu::GatherGeom g;
  g.ndim = static_cast<int>(index_shape.size());
  g.dim = static_cast<int>(d);
  for (int k = 0; k < g.ndim; ++k) {
    g.shape[k] = index_shape[k];
    g.x_stride[k] = x_strides[k];
  }
  return g;
}

}  // namespace

// ---- concat / stack ----------------------------------------------------------------------------

Tensor concat(const std::vector<Tensor>& ts, int64_t dim) {
  check_list("concat", ts);
  const Tensor& t0 = ts[0];
  MEL_CHECK(t0.dim() > 0,
            "concat: tensor 0 is zero-dimensional (shape []); zero-dimensional tensors cannot be "
            "concatenated (use stack)");
  const int64_t n = t0.dim();
  const int64_t d = wrap_dim(dim, n, "concat");
  for (size_t i = 1; i < ts.size(); ++i) {
    const Shape& s = ts[i].shape();
    MEL_CHECK(ts[i].dim() == n,
              "concat: tensor {} has {} dimensions (shape {}) but tensor 0 has {} (shape {}); all "
              "tensors must have the same rank",
              i, ts[i].dim(), shape_str(s), n, shape_str(t0.shape()));
    for (int64_t k = 0; k < n; ++k) {
      MEL_CHECK(k == d || s[k] == t0.shape()[k],
                "concat: tensor {} has shape {} but tensor 0 has {}; sizes must match except in "
                "dimension {}",
                i, shape_str(s), shape_str(t0.shape()), d);
    }
  }
  Shape shape = t0.shape();
  std::vector<int64_t> starts, lengths;
  int64_t total = 0;
  for (const Tensor& t : ts) {
    starts.push_back(total);
    lengths.push_back(t.shape()[d]);
    total += t.shape()[d];
  }
  shape[d] = total;
  Tensor out = empty(shape, t0.dtype(), t0.device());
  for (size_t i = 0; i < ts.size(); ++i) {
    out.narrow(d, starts[i], lengths[i]).copy_(ts[i].detach());
  }
  autograd::record("concat", out, ts, [d, starts, lengths](const Tensor& g, const GradMask& need) {
    std::vector<Tensor> grads(starts.size());
    for (size_t i = 0; i < starts.size(); ++i) {
      if (need[i]) grads[i] = g.narrow(d, starts[i], lengths[i]);
    }
    return grads;
  });
  return out;
}

Tensor stack(const std::vector<Tensor>& ts, int64_t dim) {
  check_list("stack", ts);
  for (size_t i = 1; i < ts.size(); ++i) {
    MEL_CHECK(ts[i].shape() == ts[0].shape(),
              "stack: tensor {} has shape {} but tensor 0 has {}; all tensors must have the same "
              "shape",
              i, shape_str(ts[i].shape()), shape_str(ts[0].shape()));
  }
  const int64_t d = wrap_dim(dim, ts[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  parts.reserve(ts.size());
  for (const Tensor& t : ts) parts.push_back(t.unsqueeze(d));
  return concat(parts, d);
}

// ---- index_select ------------------------------------------------------------------------------

namespace {

// gx[a, idx[k], b] += g[a, k, b] on g's device (g and gx contiguous, gx zeroed).
template <class T>
void index_add_any(const Tensor& g, int64_t A, int64_t K, int64_t B, const Tensor& idx, int64_t D,
                   const Tensor& gx) {
  const size_t bytes = MEL_KERNEL_QUERY(g.device(), index_add_workspace_bytes, K, D);
  Tensor ws = kernel_scratch(g.device(), bytes);
  MEL_KERNEL(g.device(), index_add<T>, g.data<T>(), A, K, B, idx.data<int64_t>(), D, gx.data<T>(),
             scratch_ptr(ws), bytes);
}

// x defined, at least 1-D; d wrapped; idx contiguous i64 on x's device with valid values.
Tensor index_select_checked(const Tensor& x, int64_t d, const Tensor& idx) {
  if (upcast(x)) return index_select_checked(x.to(DType::f32), d, idx).to(x.dtype());
  const Shape& xs = x.shape();
  const int64_t A = prod(xs, 0, d), D = xs[d], B = prod(xs, d + 1, xs.size());
  const int64_t K = idx.numel();
  Shape shape = xs;
  shape[d] = K;
  Tensor xc = x.detach().contiguous();
  Tensor out = empty(shape, x.dtype(), x.device());
  dispatch_numeric(x.dtype(), "index_select", [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(x.device(), index_select<T>, xc.data<T>(), A, D, B, idx.data<int64_t>(), K,
               out.data<T>());
  });
  autograd::record("index_select", out, {x},
                   [idx, A, D, B, K, xs](const Tensor& g, const GradMask&) {
                     Tensor gc = g.contiguous();
                     Tensor gx = zeros(xs, g.dtype(), g.device());
                     dispatch_float(g.dtype(), "index_select backward", [&](auto tag) {
                       using T = typename decltype(tag)::type;
                       index_add_any<T>(gc, A, K, B, idx, D, gx);
                     });
                     return std::vector<Tensor>{gx};
                   },
                   {idx});
  return out;
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined("index_select", x, "the input");
  Tensor idx = as_index(index, "index_select", "index");
  check_index_device("index_select", x, idx, "index");
  MEL_CHECK(index.dim() == 1, "index_select: index must be 1-D, got shape {}",
            shape_str(index.shape()));
  MEL_CHECK(x.dim() >= 1,
            "index_select: the input is zero-dimensional (shape []); expected at least 1 "
            "dimension");
  const int64_t d = wrap_dim(dim, x.dim(), "index_select");
  const int64_t size = x.shape()[d];
  const int64_t bad = first_out_of_range(idx, size);
  if (bad >= 0) {
    fail(
        "index_select: index {} at position {} is out of range for dimension {} of size {} "
        "(input shape {}; expected 0 <= index < {})",
        index_value(idx, bad), bad, d, size, shape_str(x.shape()), size);
  }
  return index_select_checked(x, d, idx);
}

// ---- gather ------------------------------------------------------------------------------------

namespace {

// As index_select_checked: everything validated, idx contiguous i64 of the index's shape.
Tensor gather_checked(const Tensor& x, int64_t d, const Tensor& idx) {
  if (upcast(x)) return gather_checked(x.to(DType::f32), d, idx).to(x.dtype());
  Tensor xd = x.detach();
  Tensor out = empty(idx.shape(), x.dtype(), x.device());
  const kernels::cpu::GatherGeom geom = gather_geom(idx.shape(), xd.strides(), d);
  dispatch_numeric(x.dtype(), "gather", [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(x.device(), gather<T>, geom, xd.data<T>(), idx.data<int64_t>(), out.data<T>(),
               x.shape()[d]);
  });
  autograd::record("gather", out, {x},
                   [idx, d, xs = x.shape()](const Tensor& g, const GradMask&) {
                     Tensor gc = g.contiguous();
                     Tensor gx = zeros(xs, g.dtype(), g.device());
                     const kernels::cpu::GatherGeom back =
                         gather_geom(idx.shape(), contiguous_strides(xs), d);
                     dispatch_float(g.dtype(), "gather backward", [&](auto tag) {
                       using T = typename decltype(tag)::type;
                       MEL_KERNEL(g.device(), scatter_add<T>, back, gc.data<T>(),
                                  idx.data<int64_t>(), gx.data<T>(), xs[d]);
                     });
                     return std::vector<Tensor>{gx};
                   },
                   {idx});
  return out;
}

}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined("gather", x, "the input");
  Tensor idx = as_index(index, "gather", "index");
  check_index_device("gather", x, idx, "index");
  MEL_CHECK(index.dim() == x.dim(),
            "gather: index has {} dimensions (shape {}) but the input has {} (shape {}); they must "
            "have the same rank",
            index.dim(), shape_str(index.shape()), x.dim(), shape_str(x.shape()));
  if (x.dim() == 0) {
    wrap_dim(dim, 0, "gather");
    return gather(x.reshape({1}), 0, index.reshape({1})).reshape({});
  }
  MEL_CHECK(x.dim() <= kernels::kMaxDims,
            "gather: tensors of {} dimensions are not supported (at most {})", x.dim(),
            kernels::kMaxDims);
  const int64_t d = wrap_dim(dim, x.dim(), "gather");
  for (int64_t k = 0; k < x.dim(); ++k) {
    MEL_CHECK(k == d || index.shape()[k] <= x.shape()[k],
              "gather: index has shape {} but the input has {}; index size {} in dimension {} "
              "exceeds the input's {} (only dimension {}, the gathered one, may be larger)",
              shape_str(index.shape()), shape_str(x.shape()), index.shape()[k], k, x.shape()[k], d);
  }
  const int64_t size = x.shape()[d];
  const int64_t bad = first_out_of_range(idx, size);
  if (bad >= 0) {
    fail(
        "gather: index {} at position {} is out of range for dimension {} of size {} (input "
        "shape {}; expected 0 <= index < {})",
        index_value(idx, bad), position_str(idx.shape(), bad), d, size, shape_str(x.shape()), size);
  }
  return gather_checked(x, d, idx);
}

// ---- one_hot -----------------------------------------------------------------------------------

Tensor one_hot(const Tensor& labels, int64_t num_classes, DType dtype) {
  Tensor lab = as_index(labels, "one_hot", "labels");
  MEL_CHECK(num_classes >= 1, "one_hot: num_classes must be at least 1 (got {})", num_classes);
  const int64_t bad = first_out_of_range(lab, num_classes);
  if (bad >= 0) {
    fail(
        "one_hot: label {} at position {} is out of range for {} classes (labels shape {}; "
        "expected 0 <= label < {})",
        index_value(lab, bad), position_str(lab.shape(), bad), num_classes,
        shape_str(labels.shape()), num_classes);
  }
  if (is_half(dtype)) return one_hot(labels, num_classes, DType::f32).to(dtype);
  Shape shape = labels.shape();
  shape.push_back(num_classes);
  Tensor out = empty(shape, dtype, labels.device());
  auto run = [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(lab.device(), one_hot<T>, lab.data<int64_t>(), lab.numel(), num_classes,
               out.data<T>());
  };
  if (dtype == DType::u8) {
    run(TypeTag<uint8_t>{});
  } else {
    dispatch_numeric(dtype, "one_hot", run);
  }
  return out;
}

// ---- embedding ---------------------------------------------------------------------------------

namespace {

Tensor embedding_checked(const Tensor& weight, const Tensor& idx) {
  if (upcast(weight)) return embedding_checked(weight.to(DType::f32), idx).to(weight.dtype());
  const int64_t V = weight.shape()[0], E = weight.shape()[1], K = idx.numel();
  Shape shape = idx.shape();
  shape.push_back(E);
  Tensor wc = weight.detach().contiguous();
  Tensor out = empty(shape, weight.dtype(), weight.device());
  dispatch_numeric(weight.dtype(), "embedding", [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(weight.device(), index_select<T>, wc.data<T>(), 1, V, E, idx.data<int64_t>(), K,
               out.data<T>());
  });
  autograd::record("embedding", out, {weight},
                   [idx, V, E, K](const Tensor& g, const GradMask&) {
                     Tensor gc = g.contiguous();
                     Tensor gw = zeros({V, E}, g.dtype(), g.device());
                     dispatch_float(g.dtype(), "embedding backward", [&](auto tag) {
                       using T = typename decltype(tag)::type;
                       index_add_any<T>(gc, 1, K, E, idx, V, gw);
                     });
                     return std::vector<Tensor>{gw};
                   },
                   {idx});
  return out;
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  check_defined("embedding", weight, "the weight");
  MEL_CHECK(weight.dim() == 2, "embedding: weight must be 2-D [num_embeddings, dim], got shape {}",
            shape_str(weight.shape()));
  Tensor idx = as_index(indices, "embedding", "indices");
  check_index_device("embedding", weight, idx, "indices");
  const int64_t V = weight.shape()[0];
  const int64_t bad = first_out_of_range(idx, V);
  if (bad >= 0) {
    fail(
        "embedding: index {} at position {} is out of range for {} embeddings (weight shape {}; "
        "expected 0 <= index < {})",
        index_value(idx, bad), position_str(idx.shape(), bad), V, shape_str(weight.shape()), V);
  }
  return embedding_checked(weight, idx);
}

}  // namespace mel
