#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/conv.h"
#include "kernels/cuda/launch.cuh"

namespace mel::kernels::cuda {

// Named rather than anonymous: ConvCache::Impl (external linkage) holds these types.
namespace conv_detail {

// cuDNN descriptors, created on construction and destroyed with the object.
template <class H, cudnnStatus_t (*Create)(H*), cudnnStatus_t (*Destroy)(H)>
class CudnnOwned {
 public:
  CudnnOwned() { MEL_CUDNN_CHECK(Create(&h_)); }
  ~CudnnOwned() {
    if (h_) Destroy(h_);
  }
  CudnnOwned(const CudnnOwned&) = delete;
  CudnnOwned& operator=(const CudnnOwned&) = delete;
  H get() const { return h_; }

 private:
  H h_ = nullptr;
};
using TensorDesc =
    CudnnOwned<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using FilterDesc =
    CudnnOwned<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor>;
using ConvDesc = CudnnOwned<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                            cudnnDestroyConvolutionDescriptor>;

enum Direction { kForward = 0, kBackwardData = 1, kBackwardFilter = 2 };

struct Key {
  std::array<int64_t, 14> dims{};
  int32_t dtype = 0;
  bool tf32 = false;
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    for (int64_t v : k.dims) mix(static_cast<uint64_t>(v));
    mix(static_cast<uint64_t>(k.dtype) << 1 | (k.tf32 ? 1u : 0u));
    return static_cast<size_t>(h);
  }
};

struct Choice {
  bool chosen = false;
  int algo = 0;
  size_t workspace = 0;
};

// Descriptors of one geometry. Each direction has its own convolution descriptor because each
// carries the math type its algorithm was benchmarked with; they are set while `mu` is held and
// only read afterwards.
struct Entry {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv[3];
  std::mutex mu;
  Choice choice[3];
};

}  // namespace conv_detail

struct ConvCache::Impl {
  std::mutex mu;
  std::unordered_map<conv_detail::Key, std::shared_ptr<conv_detail::Entry>, conv_detail::KeyHash>
      entries;
};

ConvCache::ConvCache() : impl_(std::make_unique<Impl>()) {}
ConvCache::~ConvCache() = default;

size_t ConvCache::size() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->entries.size();
}

size_t ConvCache::algorithms() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  size_t n = 0;
  for (const auto& [key, e] : impl_->entries) {
    std::lock_guard<std::mutex> entry_lock(e->mu);
    for (const auto& c : e->choice) n += c.chosen ? 1 : 0;
  }
  return n;
}

namespace {

using conv_detail::Choice;
using conv_detail::Direction;
using conv_detail::Entry;
using conv_detail::kBackwardData;
using conv_detail::kBackwardFilter;
using conv_detail::kForward;

// The largest scratch the algorithm search offers; cuDNN's fastest algorithms for the layers mel
// trains fit well within it. Asked for in decreasing sizes when memory is short.
constexpr size_t kSearchWorkspace[] = {size_t(256) << 20, size_t(64) << 20, size_t(16) << 20};

template <class T>
struct CudnnTypes;
template <>
struct CudnnTypes<float> {
  static constexpr cudnnDataType_t data = CUDNN_DATA_FLOAT, compute = CUDNN_DATA_FLOAT;
  static constexpr const char* name = "f32";
};
template <>
struct CudnnTypes<double> {
  static constexpr cudnnDataType_t data = CUDNN_DATA_DOUBLE, compute = CUDNN_DATA_DOUBLE;
  static constexpr const char* name = "f64";
};
template <>
struct CudnnTypes<bfloat16> {
  static constexpr cudnnDataType_t data = CUDNN_DATA_BFLOAT16, compute = CUDNN_DATA_FLOAT;
  static constexpr const char* name = "bf16";
};
template <>
struct CudnnTypes<half> {
  static constexpr cudnnDataType_t data = CUDNN_DATA_HALF, compute = CUDNN_DATA_FLOAT;
  static constexpr const char* name = "f16";
};

// f32 without TF32 must stay on FMA kernels: the descriptor keeps CUDNN_FMA_MATH whatever the
// search reports, and results that need tensor cores are skipped.
template <class T>
bool strict_fp32(bool allow_tf32) {
  return std::is_same_v<T, float> && !allow_tf32;
}

template <class T>
cudnnMathType_t base_math(bool allow_tf32) {
  if constexpr (std::is_same_v<T, double>) {
    return CUDNN_DEFAULT_MATH;
  } else if constexpr (std::is_same_v<T, float>) {
    return allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;  // DEFAULT permits TF32 on sm_80+
  } else {
    return CUDNN_TENSOR_OP_MATH;
  }
}

template <class T>
std::string describe(const Conv2dGeometry& g) {
  auto s = [](int64_t v) { return std::to_string(v); };
  return std::string(CudnnTypes<T>::name) + " input [" + s(g.n) + ", " + s(g.c_in) + ", " + s(g.h) +
         ", " + s(g.w) + "], weight [" + s(g.c_out) + ", " + s(g.c_in / g.groups) + ", " + s(g.kh) +
         ", " + s(g.kw) + "], stride (" + s(g.stride_h) + ", " + s(g.stride_w) + "), padding (" +
         s(g.pad_h) + ", " + s(g.pad_w) + "), dilation (" + s(g.dil_h) + ", " + s(g.dil_w) +
         "), groups " + s(g.groups);
}

// cuDNN's legacy descriptors take int sizes and tensors of fewer than 2^31 elements.
template <class T>
void check_int_range(const Conv2dGeometry& g) {
  const int64_t sizes[] = {g.n * g.c_in * g.h * g.w, g.n * g.c_out * g.h_out * g.w_out,
                           g.c_out * (g.c_in / g.groups) * g.kh * g.kw};
  for (int64_t v : sizes) {
    if (v > INT_MAX) {
      throw Error("conv2d: a tensor of the " + describe<T>(g) +
                  " convolution has more than 2^31 - 1 elements, more than cuDNN accepts; split "
                  "the batch");
    }
  }
}

template <class T>
std::shared_ptr<Entry> make_entry(const Conv2dGeometry& g, bool allow_tf32) {
  auto e = std::make_shared<Entry>();
  const cudnnDataType_t dt = CudnnTypes<T>::data;
  auto i = [](int64_t v) { return static_cast<int>(v); };
  MEL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->x.get(), CUDNN_TENSOR_NCHW, dt, i(g.n), i(g.c_in),
                                             i(g.h), i(g.w)));
  MEL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->y.get(), CUDNN_TENSOR_NCHW, dt, i(g.n), i(g.c_out),
                                             i(g.h_out), i(g.w_out)));
  MEL_CUDNN_CHECK(cudnnSetFilter4dDescriptor(e->w.get(), dt, CUDNN_TENSOR_NCHW, i(g.c_out),
                                             i(g.c_in / g.groups), i(g.kh), i(g.kw)));
  for (auto& c : e->conv) {
    MEL_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        c.get(), i(g.pad_h), i(g.pad_w), i(g.stride_h), i(g.stride_w), i(g.dil_h), i(g.dil_w),
        CUDNN_CROSS_CORRELATION, CudnnTypes<T>::compute));
    MEL_CUDNN_CHECK(cudnnSetConvolutionGroupCount(c.get(), i(g.groups)));
    MEL_CUDNN_CHECK(cudnnSetConvolutionMathType(c.get(), base_math<T>(allow_tf32)));
  }
  int n = 0, c = 0, h = 0, w = 0;
  MEL_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(e->conv[0].get(), e->x.get(), e->w.get(),
                                                        &n, &c, &h, &w));
  if (n != g.n || c != g.c_out || h != g.h_out || w != g.w_out) {
    throw Error("conv2d: cuDNN computes output [" + std::to_string(n) + ", " + std::to_string(c) +
                ", " + std::to_string(h) + ", " + std::to_string(w) + "] for the " +
                describe<T>(g) + " convolution, mel expects [" + std::to_string(g.n) + ", " +
                std::to_string(g.c_out) + ", " + std::to_string(g.h_out) + ", " +
                std::to_string(g.w_out) + "]");
  }
  return e;
}

template <class T>
std::shared_ptr<Entry> find_entry(const Conv2dGeometry& g, const CudnnConv& cc) {
  conv_detail::Key key;
  key.dims = {g.n,        g.c_in,     g.h,     g.w,     g.c_out, g.kh,    g.kw,
              g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, g.groups};
  key.dtype = static_cast<int32_t>(CudnnTypes<T>::data);
  key.tf32 = std::is_same_v<T, float> && cc.allow_tf32;
  auto& impl = cc.cache->impl();
  std::lock_guard<std::mutex> lock(impl.mu);
  auto it = impl.entries.find(key);
  if (it != impl.entries.end()) return it->second;
  return impl.entries.emplace(key, make_entry<T>(g, key.tf32)).first->second;
}

struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
};

Scratch search_scratch(const CudnnConv& cc) {
  for (size_t bytes : kSearchWorkspace) {
    try {
      return {cc.workspace(bytes), bytes};
    } catch (const std::exception&) {
      // out of device memory: offer the search less
    }
  }
  return {};
}

// Index of the fastest usable result (results come sorted by time): deterministic first, then
// any; -1 when none fits.
template <class T, class Perf>
int pick(const std::vector<Perf>& perf, int count, size_t limit, bool allow_tf32) {
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < count; ++i) {
      const Perf& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS || p.memory > limit) continue;
      if (std::is_same_v<T, float> && p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) {
        continue;  // would round f32 operands to f16
      }
      if (strict_fp32<T>(allow_tf32) && p.mathType == CUDNN_TENSOR_OP_MATH) continue;
      if (pass == 0 && p.determinism != CUDNN_DETERMINISTIC) continue;
      return i;
    }
  }
  return -1;
}

// Records the chosen result: its math type goes on the direction's descriptor (kept at FMA for
// strict f32), and the workspace is asked again for that exact configuration.
template <class T, class Perf, class SizeFn>
void record(Entry& e, Direction d, const Perf& p, bool allow_tf32, SizeFn&& workspace_size) {
  if (!strict_fp32<T>(allow_tf32)) {
    MEL_CUDNN_CHECK(cudnnSetConvolutionMathType(e.conv[d].get(), p.mathType));
  }
  size_t bytes = 0;
  MEL_CUDNN_CHECK(workspace_size(&bytes));
  e.choice[d] = Choice{true, static_cast<int>(p.algo), std::max(bytes, p.memory)};
}

template <class T>
[[noreturn]] void no_algorithm(const char* direction, const Conv2dGeometry& g) {
  throw Error(std::string("conv2d: cuDNN has no ") + direction + " algorithm for the " +
              describe<T>(g) + " convolution within the workspace limit");
}

template <class T>
Choice choose_forward(Entry& e, const Conv2dGeometry& g, const CudnnConv& cc, const T* x,
                      const T* w, T* y) {
  std::lock_guard<std::mutex> lock(e.mu);
  if (e.choice[kForward].chosen) return e.choice[kForward];
  cudnnConvolutionDescriptor_t conv = e.conv[kForward].get();
  int max = 0, count = 0;
  MEL_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(cc.handle, &max));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(max, 1));
  const Scratch s = search_scratch(cc);
  MEL_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(cc.handle, e.x.get(), x, e.w.get(), w,
                                                         conv, e.y.get(), y, max, &count,
                                                         perf.data(), s.ptr, s.bytes));
  int i = pick<T>(perf, count, s.bytes, cc.allow_tf32);
  if (i < 0) {
    MEL_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(cc.handle, e.x.get(), e.w.get(), conv,
                                                           e.y.get(), max, &count, perf.data()));
    i = pick<T>(perf, count, s.bytes, cc.allow_tf32);
  }
  if (i < 0) no_algorithm<T>("forward", g);
  record<T>(e, kForward, perf[i], cc.allow_tf32, [&](size_t* b) {
    return cudnnGetConvolutionForwardWorkspaceSize(cc.handle, e.x.get(), e.w.get(), conv, e.y.get(),
                                                   perf[i].algo, b);
  });
  return e.choice[kForward];
}

template <class T>
Choice choose_backward_data(Entry& e, const Conv2dGeometry& g, const CudnnConv& cc, const T* dy,
                            const T* w, T* dx) {
  std::lock_guard<std::mutex> lock(e.mu);
  if (e.choice[kBackwardData].chosen) return e.choice[kBackwardData];
  cudnnConvolutionDescriptor_t conv = e.conv[kBackwardData].get();
  int max = 0, count = 0;
  MEL_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cc.handle, &max));
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(max, 1));
  const Scratch s = search_scratch(cc);
  MEL_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(cc.handle, e.w.get(), w, e.y.get(),
                                                              dy, conv, e.x.get(), dx, max, &count,
                                                              perf.data(), s.ptr, s.bytes));
  int i = pick<T>(perf, count, s.bytes, cc.allow_tf32);
  if (i < 0) {
    MEL_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        cc.handle, e.w.get(), e.y.get(), conv, e.x.get(), max, &count, perf.data()));
    i = pick<T>(perf, count, s.bytes, cc.allow_tf32);
  }
  if (i < 0) no_algorithm<T>("backward-data", g);
  record<T>(e, kBackwardData, perf[i], cc.allow_tf32, [&](size_t* b) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(cc.handle, e.w.get(), e.y.get(), conv,
                                                        e.x.get(), perf[i].algo, b);
  });
  return e.choice[kBackwardData];
}

template <class T>
Choice choose_backward_filter(Entry& e, const Conv2dGeometry& g, const CudnnConv& cc, const T* dy,
                              const T* x, T* dw) {
  std::lock_guard<std::mutex> lock(e.mu);
  if (e.choice[kBackwardFilter].chosen) return e.choice[kBackwardFilter];
  cudnnConvolutionDescriptor_t conv = e.conv[kBackwardFilter].get();
  int max = 0, count = 0;
  MEL_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cc.handle, &max));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(std::max(max, 1));
  const Scratch s = search_scratch(cc);
  MEL_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
      cc.handle, e.x.get(), x, e.y.get(), dy, conv, e.w.get(), dw, max, &count, perf.data(), s.ptr,
      s.bytes));
  int i = pick<T>(perf, count, s.bytes, cc.allow_tf32);
  if (i < 0) {
    MEL_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        cc.handle, e.x.get(), e.y.get(), conv, e.w.get(), max, &count, perf.data()));
    i = pick<T>(perf, count, s.bytes, cc.allow_tf32);
  }
  if (i < 0) no_algorithm<T>("backward-filter", g);
  record<T>(e, kBackwardFilter, perf[i], cc.allow_tf32, [&](size_t* b) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(cc.handle, e.x.get(), e.y.get(), conv,
                                                          e.w.get(), perf[i].algo, b);
  });
  return e.choice[kBackwardFilter];
}

// y[n, c, :] += bias[c], in the accumulation type with one rounding.
template <class T>
__global__ void add_bias_kernel(int64_t total, int64_t hw, int64_t channels, T* y, const T* bias) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / hw) % channels;
    y[i] = T(static_cast<A>(y[i]) + static_cast<A>(bias[c]));
  }
}

// db[c] = sum over images and positions of dy[n, c, :]: one block per channel, a fixed
// summation order (deterministic).
template <class T>
__global__ void bias_grad_kernel(int64_t n, int64_t channels, int64_t hw, const T* dy, T* db) {
  using A = acc_t<T>;
  __shared__ A scratch[kBlock / kWarp];
  const int64_t c = blockIdx.x;
  const int64_t count = n * hw;
  A s = A(0);
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t img = i / hw, p = i - img * hw;
    s += static_cast<A>(dy[(img * channels + c) * hw + p]);
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) db[c] = T(s);
}

template <class T>
using scale_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

}  // namespace

template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                    const CudnnConv& cc, cudaStream_t stream) {
  if (g.n == 0) return;
  check_int_range<T>(g);
  MEL_CUDNN_CHECK(cudnnSetStream(cc.handle, stream));
  std::shared_ptr<Entry> e = find_entry<T>(g, cc);
  const Choice c = choose_forward<T>(*e, g, cc, x, w, y);
  void* ws = c.workspace > 0 ? cc.workspace(c.workspace) : nullptr;
  const scale_t<T> one = 1, zero = 0;
  MEL_CUDNN_CHECK(cudnnConvolutionForward(
      cc.handle, &one, e->x.get(), x, e->w.get(), w, e->conv[kForward].get(),
      static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws, c.workspace, &zero, e->y.get(), y));
  if (bias) {
    const int64_t hw = g.h_out * g.w_out, total = g.n * g.c_out * hw;
    add_bias_kernel<T><<<grid_for(total), kBlock, 0, stream>>>(total, hw, g.c_out, y, bias);
    MEL_CUDA_CHECK_LAUNCH();
  }
}

template <class T>
void conv2d_backward(const Conv2dGeometry& g, const T* dy, const T* x, const T* w, T* dx, T* dw,
                     T* dbias, const CudnnConv& cc, cudaStream_t stream) {
  if (g.n == 0) {  // an empty batch contributes nothing to the weight and bias gradients
    if (dw) {
      const size_t bytes = sizeof(T) * g.c_out * (g.c_in / g.groups) * g.kh * g.kw;
      MEL_CUDA_CHECK(cudaMemsetAsync(dw, 0, bytes, stream));
    }
    if (dbias) MEL_CUDA_CHECK(cudaMemsetAsync(dbias, 0, sizeof(T) * g.c_out, stream));
    return;
  }
  check_int_range<T>(g);
  MEL_CUDNN_CHECK(cudnnSetStream(cc.handle, stream));
  std::shared_ptr<Entry> e = find_entry<T>(g, cc);
  const scale_t<T> one = 1, zero = 0;
  if (dx) {
    const Choice c = choose_backward_data<T>(*e, g, cc, dy, w, dx);
    void* ws = c.workspace > 0 ? cc.workspace(c.workspace) : nullptr;
    MEL_CUDNN_CHECK(cudnnConvolutionBackwardData(cc.handle, &one, e->w.get(), w, e->y.get(), dy,
                                                 e->conv[kBackwardData].get(),
                                                 static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo),
                                                 ws, c.workspace, &zero, e->x.get(), dx));
  }
  if (dw) {
    const Choice c = choose_backward_filter<T>(*e, g, cc, dy, x, dw);
    void* ws = c.workspace > 0 ? cc.workspace(c.workspace) : nullptr;
    MEL_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
        cc.handle, &one, e->x.get(), x, e->y.get(), dy, e->conv[kBackwardFilter].get(),
        static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws, c.workspace, &zero, e->w.get(),
        dw));
  }
  if (dbias) {
    const int64_t hw = g.h_out * g.w_out;
    bias_grad_kernel<T>
        <<<static_cast<unsigned>(g.c_out), kBlock, 0, stream>>>(g.n, g.c_out, hw, dy, dbias);
    MEL_CUDA_CHECK_LAUNCH();
  }
}

#define MEL_CONV_INSTANTIATE(T)                                                                 \
  template void conv2d_forward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*,      \
                                  const CudnnConv&, cudaStream_t);                              \
  template void conv2d_backward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*, T*, \
                                   T*, const CudnnConv&, cudaStream_t);
MEL_CONV_INSTANTIATE(float)
MEL_CONV_INSTANTIATE(double)
MEL_CONV_INSTANTIATE(bfloat16)
MEL_CONV_INSTANTIATE(half)
#undef MEL_CONV_INSTANTIATE

namespace {
CudnnConv cudnn_of(const ConvResources& r) {
  return {static_cast<cudnnHandle_t>(r.cudnn), static_cast<ConvCache*>(r.algorithm_cache),
          r.allow_tf32, r.workspace};
}
}  // namespace

template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                    const ConvResources& r, cudaStream_t stream) {
  conv2d_forward<T>(g, x, w, bias, y, cudnn_of(r), stream);
}

template <class T>
void conv2d_backward(const Conv2dGeometry& g, const T* dy, const T* x, const T* w, T* dx, T* dw,
                     T* dbias, const ConvResources& r, cudaStream_t stream) {
  conv2d_backward<T>(g, dy, x, w, dx, dw, dbias, cudnn_of(r), stream);
}

#define MEL_CONV_RESOURCES_INSTANTIATE(T)                                                       \
  template void conv2d_forward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*,      \
                                  const ConvResources&, cudaStream_t);                          \
  template void conv2d_backward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*, T*, \
                                   T*, const ConvResources&, cudaStream_t);
MEL_CONV_RESOURCES_INSTANTIATE(float)
MEL_CONV_RESOURCES_INSTANTIATE(double)
MEL_CONV_RESOURCES_INSTANTIATE(bfloat16)
MEL_CONV_RESOURCES_INSTANTIATE(half)
#undef MEL_CONV_RESOURCES_INSTANTIATE

}  // namespace mel::kernels::cuda
