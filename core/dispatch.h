// Device dispatch in one place: an op validates its inputs once and calls a kernel family's CPU
// function or its CUDA twin (same arguments, then the device's stream) through these macros.
#pragma once
#include "core/cuda_context.h"
#include "core/device.h"
#include "core/factory.h"
#include "core/tensor.h"

#include <type_traits>

// MEL_DISPATCH_KERNEL(ns, device, fn, args...) calls ns::cpu::fn(args...) when `device` is the
// CPU and ns::cuda::fn(args..., cuda_stream(device)) on a GPU. In a build without CUDA the GPU
// branch is a clear error (no GPU tensor can exist there). Because both calls are compiled from
// one argument list, a CUDA twin whose signature drifts from its CPU kernel breaks the CUDA build.
// `fn` may carry one template argument (`unary<T>`); for several use MEL_DISPATCH_KERNEL_T.
// Extensions use it with their own namespace: MEL_DISPATCH_KERNEL(my_ext, x.device(), prelu<T>,
// ...) for my_ext::cpu::prelu<T> and my_ext::cuda::prelu<T>.
#define MEL_DISPATCH_KERNEL(ns, device, fn, ...)                                          \
  do {                                                                                    \
    const ::mel::Device mel_dispatch_device_ = (device);                                  \
    if (mel_dispatch_device_.is_cuda()) {                                                 \
      MEL_CUDA_ONLY(ns::cuda::fn(__VA_ARGS__, ::mel::cuda_stream(mel_dispatch_device_))); \
    } else {                                                                              \
      ns::cpu::fn(__VA_ARGS__);                                                           \
    }                                                                                     \
  } while (0)

#define MEL_DISPATCH_UNPACK(...) __VA_ARGS__

// As MEL_DISPATCH_KERNEL for a function template with several template arguments, given in
// parentheses: MEL_DISPATCH_KERNEL_T(::mel::kernels, dev, copy, (D, S), args...).
#define MEL_DISPATCH_KERNEL_T(ns, device, fn, targs, ...)          \
  do {                                                             \
    const ::mel::Device mel_dispatch_device_ = (device);           \
    if (mel_dispatch_device_.is_cuda()) {                          \
      MEL_CUDA_ONLY(ns::cuda::fn<MEL_DISPATCH_UNPACK targs>(       \
          __VA_ARGS__, ::mel::cuda_stream(mel_dispatch_device_))); \
    } else {                                                       \
      ns::cpu::fn<MEL_DISPATCH_UNPACK targs>(__VA_ARGS__);         \
    }                                                              \
  } while (0)

// The project's own kernels (mel::kernels::cpu / mel::kernels::cuda).
#define MEL_KERNEL(device, fn, ...) MEL_DISPATCH_KERNEL(::mel::kernels, device, fn, __VA_ARGS__)
#define MEL_KERNEL_T(device, fn, targs, ...) \
  MEL_DISPATCH_KERNEL_T(::mel::kernels, device, fn, targs, __VA_ARGS__)

// For families whose CUDA twins also take bf16 and f16 while the CPU op computes those through f32
// copies: with T float or double both backends are named, with a 16-bit T only the GPU's. Use
// inside a dtype dispatch that binds T.
#define MEL_KERNEL_FLOAT_OR_GPU(T, device, fn, ...)                                     \
  do {                                                                                  \
    if constexpr (std::is_floating_point_v<T>) {                                        \
      MEL_KERNEL(device, fn, __VA_ARGS__);                                              \
    } else {                                                                            \
      MEL_CUDA_ONLY(::mel::kernels::cuda::fn(__VA_ARGS__, ::mel::cuda_stream(device))); \
    }                                                                                   \
  } while (0)

// The value of a query that both backends answer (a workspace size, say): ns::cpu::fn(args...)
// on the CPU, ns::cuda::fn(args...) on a GPU.
#define MEL_KERNEL_QUERY(device, fn, ...)                          \
  [&]() {                                                          \
    if ((device).is_cuda()) {                                      \
      MEL_CUDA_ONLY(return ::mel::kernels::cuda::fn(__VA_ARGS__)); \
    }                                                              \
    return ::mel::kernels::cpu::fn(__VA_ARGS__);                   \
  }()

namespace mel {

// Scratch memory for one kernel call: `bytes` from the device's caching allocator, released when
// the returned tensor goes (a GPU stream orders the reuse after the kernel); undefined for 0.
inline Tensor kernel_scratch(Device d, size_t bytes) {
  return bytes > 0 ? empty({static_cast<int64_t>(bytes)}, DType::u8, d) : Tensor();
}
inline void* scratch_ptr(const Tensor& scratch) {
  return scratch.defined() ? scratch.data_ptr() : nullptr;
}

}  // namespace mel
