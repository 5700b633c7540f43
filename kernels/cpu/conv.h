// CPU 2-D convolution (NCHW, PyTorch semantics: zero padding, stride, dilation, groups) forward and
// backward, through gemm(): Winograd F(4x4, 3x3) for 3x3 stride-1 layers, im2col otherwise.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

namespace mel::kernels::cpu {

// Sizes of one convolution. x: [n, c_in, h, w]; w: [c_out, c_in / groups, kh, kw];
// y: [n, c_out, h_out, w_out]; every tensor contiguous. The caller has validated them.
struct Conv2dGeometry {
  int64_t n = 0, c_in = 0, h = 0, w = 0;
  int64_t c_out = 0, kh = 0, kw = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  int64_t groups = 1;
  int64_t h_out = 0, w_out = 0;
  bool allow_winograd = true;  // false forces im2col (benchmarks and tests compare the two)
};

// Elements of scratch the calls below need in `workspace` (possibly 0, when it may be null).
// Computed from the geometry and the thread count, so ask right before the call.
int64_t conv2d_forward_workspace(const Conv2dGeometry& g);
int64_t conv2d_backward_workspace(const Conv2dGeometry& g, bool need_dx, bool need_dw);

// y = conv(x, w) + bias (bias may be null). T: float or double. Parallel across chunks of images
// with OpenMP (gemm then runs single-threaded inside), or serial with a parallel gemm when the
// batch is too small to split; a call from inside a parallel region runs on its thread alone.
template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                    T* workspace);

// Gradients for output gradient dy; each of dx, dw, dbias may be null to skip it. x is read only
// when dw is wanted, w only when dx is. The weight and bias gradients are summed over the batch in
// an order fixed by the shapes alone (for up to 4 threads), so results do not depend on the
// thread count (up to 4) or on scheduling.
template <class T>
void conv2d_backward(const Conv2dGeometry& g, const T* dy, const T* x, const T* w, T* dx, T* dw,
                     T* dbias, T* workspace);

// What a convolution takes besides its tensors, one type for both backends so that an op fills it
// once for any device: scratch memory from the caller's allocator and, on a GPU, the device's
// cuDNN handle and per-geometry algorithm cache (opaque here, since the CPU kernels never see
// cuDNN; kernels/cuda/conv.h says what they point to).
struct ConvResources {
  std::function<void*(size_t bytes)> workspace;
  void* cudnn = nullptr;            // cudnnHandle_t (GPU)
  void* algorithm_cache = nullptr;  // kernels::cuda::ConvCache* (GPU)
  bool allow_tf32 = false;          // f32 on tensor cores (GPU)
};

// The twins of kernels/cuda/conv.h's entry points: as above, with the scratch requested through
// `resources`.
template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                    const ConvResources& resources);
template <class T>
void conv2d_backward(const Conv2dGeometry& g, const T* dy, const T* x, const T* w, T* dx, T* dw,
                     T* dbias, const ConvResources& resources);

}  // namespace mel::kernels::cpu
