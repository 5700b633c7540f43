// cuDNN 2-D convolution, the twin of kernels/cpu/conv.h on a stream: NCHW forward, data, filter
// and bias gradients for f32 (FP32 or TF32 math), f64, bf16 and f16 (f32 accumulation).
#pragma once
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstddef>
#include <functional>
#include <memory>

#include "kernels/cpu/conv.h"
#include "kernels/half.h"

namespace mel::kernels::cuda {

using cpu::Conv2dGeometry;
using cpu::ConvResources;

// cuDNN descriptors and the algorithm chosen (benchmarked once with cudnnFind*AlgorithmEx) per
// geometry, dtype, math mode and direction. One per device: core keeps it in
// cuda_context(i).cache<ConvCache>("conv"). Thread-safe.
class ConvCache {
 public:
  ConvCache();
  ~ConvCache();
  ConvCache(const ConvCache&) = delete;
  ConvCache& operator=(const ConvCache&) = delete;
  size_t size() const;        // geometries held (for tests)
  size_t algorithms() const;  // directions whose algorithm has been chosen (for tests)
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// What a convolution runs with: the device's cuDNN handle, its algorithm cache, whether f32 may
// use TF32 tensor cores (else FMA math only), and the device's scratch memory (a pointer to at
// least `bytes`, valid for work queued on the stream until the next call: cuda_context's
// workspace()). It may throw when the memory is not there; the algorithm search then asks for less.
struct CudnnConv {
  cudnnHandle_t handle = nullptr;
  ConvCache* cache = nullptr;
  bool allow_tf32 = false;
  std::function<void*(size_t bytes)> workspace;
};

// y = conv(x, w) + bias (bias may be null), all contiguous NCHW device memory. T: float, double,
// bfloat16, half. The first call for a geometry synchronises the device (algorithm benchmark).
template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                    const CudnnConv& cc, cudaStream_t stream);

// Gradients for output gradient dy; each of dx, dw, dbias may be null to skip it. x is read only
// when dw is wanted, w only when dx is. Only deterministic algorithms are chosen when cuDNN has
// one, so repeated calls give identical results.
template <class T>
void conv2d_backward(const Conv2dGeometry& g, const T* dy, const T* x, const T* w, T* dx, T* dw,
                     T* dbias, const CudnnConv& cc, cudaStream_t stream);

// The twins of the CPU entry points: `resources` carries the device's cuDNN handle, its ConvCache
// and the workspace allocator (as a CudnnConv does).
template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                    const ConvResources& resources, cudaStream_t stream);
template <class T>
void conv2d_backward(const Conv2dGeometry& g, const T* dy, const T* x, const T* w, T* dx, T* dw,
                     T* dbias, const ConvResources& resources, cudaStream_t stream);

}  // namespace mel::kernels::cuda
