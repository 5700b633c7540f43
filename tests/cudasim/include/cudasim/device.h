// The device side of the kernel simulator: what a .cu file of kernels/cuda sees when it is
// compiled as host C++ for the simulator (docs/ARCHITECTURE.md, "Kernel simulator"). The CUDA
// toolkit's own headers give the types (dim3, float4, cudaStream_t, the runtime API); this header
// gives the built-in variables, barriers, warp shuffles and votes, atomics, intrinsics and the
// launch operator that tests/cudasim/transform.cmake writes in place of `<<<...>>>`. Every thread
// of a block is a fiber of tests/cudasim/runtime.cpp; barriers and warp operations are rendezvous
// points where the scheduler checks that every thread that must arrive does.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cudasim/sim.h"

// host_defines.h makes these empty for a host compiler; the simulator wants them so.
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __grid_constant__
#define __grid_constant__
// __shared__ declarations are rewritten by transform.cmake into cudasim::shared<>() references; a
// leftover one (in a file the transform did not see) is an error rather than a silent static.
#undef __shared__
#define __shared__ static_assert(false, "cudasim: __shared__ outside a transformed source file");

namespace cudasim {

// Built-in variables of the running fiber (set by the scheduler before it resumes a thread).
struct BuiltIns {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
extern BuiltIns g_builtins;

// Rendezvous points; `site` is the file and line of the call.
void syncthreads(const char* file, int line);
enum class WarpOp : int { shfl, shfl_up, shfl_down, shfl_xor, ballot, any, all, syncwarp };
// Deposits up to 16 bytes for a warp operation and returns (in `out`) what the lane receives:
// the source lane's bytes for a shuffle, the 32-bit vote for ballot/any/all.
void warp_exchange(WarpOp op, unsigned mask, const void* value, size_t bytes, int arg, int width,
                   void* out, const char* file, int line);
// The current block's shared memory: the array of type A declared at the site whose tag is `tag`
// (one per declaration and template instance), placed in the block's arena on first use.
void* shared_slot(const void* tag, size_t bytes, size_t align, const char* name);
template <class A>
A& shared(const void* tag, const char* name) {
  return *static_cast<A*>(shared_slot(tag, sizeof(A), alignof(A), name));
}

template <class T>
T shuffle(WarpOp op, unsigned mask, T v, int arg, int width, const char* file, int line) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16, "cudasim: shuffle type");
  T out;
  warp_exchange(op, mask, &v, sizeof(T), arg, width, &out, file, line);
  return out;
}
inline unsigned vote(WarpOp op, unsigned mask, int pred, const char* file, int line) {
  unsigned out = 0;
  warp_exchange(op, mask, &pred, sizeof(int), 0, 32, &out, file, line);
  return out;
}

// ---- launch: transform.cmake rewrites `k<<<grid, block, smem, stream>>>(args);` into
//   Spec(__FILE__, __LINE__, grid, block, smem, stream)(args) ->* [](auto&... a) { k(a...); };
// The arguments are evaluated once, on the host, as a launch does; every thread then calls the
// kernel with its own copies (template arguments are deduced from them, as nvcc does).

template <class... A>
struct Pending {
  Launch launch;
  std::tuple<A...> args;
};

struct Spec {
  Launch launch;
  Spec(const char* file, int line, dim3 grid, dim3 block, size_t smem = 0,
       cudaStream_t stream = nullptr) {
    launch.file = file;
    launch.line = line;
    launch.grid = grid;
    launch.block = block;
    launch.shared_bytes = smem;
    launch.stream = stream;
  }
  template <class... A>
  Pending<std::decay_t<A>...> operator()(A&&... a) const {
    return {launch, std::tuple<std::decay_t<A>...>(std::forward<A>(a)...)};
  }
};

// Pointer arguments must be device memory (or null). A struct argument whose bytes are all value
// bytes (no padding, no floating-point members: std::has_unique_object_representations) is
// scanned for words that point into host memory or into freed device memory; padding could hold
// stale pointers, so other structs are not scanned (their pointers are checked when used: a freed
// allocation faults).
// Every argument's 8-byte words also go to `refs`: the device memory a launch can reach, which the
// simulator saves and compares between schedules.
template <class T>
void check_argument(const Launch& l, int index, const T& a, std::vector<uintptr_t>& refs) {
  if constexpr (std::is_pointer_v<T>) {
    check_pointer_argument(l, index, reinterpret_cast<const void*>(a));
    refs.push_back(reinterpret_cast<uintptr_t>(a));
  } else if constexpr (std::is_class_v<T> && std::is_trivially_copyable_v<T>) {
    if constexpr (std::has_unique_object_representations_v<T>) {
      check_struct_argument(l, index, &a, sizeof(T));
    }
    for (size_t off = 0; off + sizeof(uintptr_t) <= sizeof(T); off += sizeof(uintptr_t)) {
      uintptr_t w;
      std::memcpy(&w, reinterpret_cast<const char*>(&a) + off, sizeof w);
      refs.push_back(w);
    }
  }
}

template <class F, class... A, size_t... I>
void launch_kernel(F call, Pending<A...>& p, std::index_sequence<I...>) {
  std::vector<uintptr_t> refs;
  (check_argument(p.launch, int(I), std::get<I>(p.args), refs), ...);
  struct Body {
    F* call;
    std::tuple<A...>* values;
    static void run(void* self) {
      auto* b = static_cast<Body*>(self);
      std::tuple<A...> mine = *b->values;  // each thread's own copies
      (*b->call)(std::get<I>(mine)...);
    }
  } body{&call, &p.args};
  run_launch(p.launch, &Body::run, &body, refs);
}

template <class... A, class F>
void operator->*(Pending<A...>&& p, F call) {
  launch_kernel(call, p, std::index_sequence_for<A...>{});
}

}  // namespace cudasim

// ---- built-in variables ------------------------------------------------------------------------
#define threadIdx (::cudasim::g_builtins.thread_idx)
#define blockIdx (::cudasim::g_builtins.block_idx)
#define blockDim (::cudasim::g_builtins.block_dim)
#define gridDim (::cudasim::g_builtins.grid_dim)
inline constexpr int warpSize = 32;

// ---- barriers, shuffles, votes -----------------------------------------------------------------
#define __syncthreads() ::cudasim::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) \
  ::cudasim::vote(::cudasim::WarpOp::syncwarp, __VA_ARGS__ + 0, 1, __FILE__, __LINE__)
#define MEL_CUDASIM_SHFL(op, mask, v, arg, ...)                                                  \
  ::cudasim::shuffle(::cudasim::WarpOp::op, mask, v, arg, ::cudasim::width_arg(__VA_ARGS__ + 0), \
                     __FILE__, __LINE__)
#define __shfl_sync(mask, v, ...) MEL_CUDASIM_SHFL(shfl, mask, v, __VA_ARGS__)
#define __shfl_up_sync(mask, v, ...) MEL_CUDASIM_SHFL(shfl_up, mask, v, __VA_ARGS__)
#define __shfl_down_sync(mask, v, ...) MEL_CUDASIM_SHFL(shfl_down, mask, v, __VA_ARGS__)
#define __shfl_xor_sync(mask, v, ...) MEL_CUDASIM_SHFL(shfl_xor, mask, v, __VA_ARGS__)
#define __ballot_sync(mask, pred) \
  ::cudasim::vote(::cudasim::WarpOp::ballot, mask, !!(pred), __FILE__, __LINE__)
#define __any_sync(mask, pred) \
  (::cudasim::vote(::cudasim::WarpOp::any, mask, !!(pred), __FILE__, __LINE__) != 0)
#define __all_sync(mask, pred) \
  (::cudasim::vote(::cudasim::WarpOp::all, mask, !!(pred), __FILE__, __LINE__) != 0)
#define __activemask() (::cudasim::active_mask())
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)

namespace cudasim {
// `__shfl_xor_sync(mask, v, lane_mask)` passes no width: the default is the whole warp. The macro
// appends `+ 0` to the optional width, so "no width" arrives here as 0.
inline int width_arg(int w) {
  return w == 0 ? 32 : w;
}
unsigned active_mask();
}  // namespace cudasim

// ---- atomics (fibers switch only at barriers and warp operations: a read-modify-write is atomic)
template <class T>
T atomicAdd(T* p, std::type_identity_t<T> v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <class T>
T atomicSub(T* p, std::type_identity_t<T> v) {
  T old = *p;
  *p = old - v;
  return old;
}
template <class T>
T atomicMin(T* p, std::type_identity_t<T> v) {
  T old = *p;
  *p = v < old ? v : old;
  return old;
}
template <class T>
T atomicMax(T* p, std::type_identity_t<T> v) {
  T old = *p;
  *p = old < v ? v : old;
  return old;
}
template <class T>
T atomicExch(T* p, std::type_identity_t<T> v) {
  T old = *p;
  *p = v;
  return old;
}
template <class T>
T atomicCAS(T* p, std::type_identity_t<T> compare, std::type_identity_t<T> v) {
  T old = *p;
  if (old == compare) *p = v;
  return old;
}
template <class T>
T atomicAnd(T* p, std::type_identity_t<T> v) {
  T old = *p;
  *p = old & v;
  return old;
}
template <class T>
T atomicOr(T* p, std::type_identity_t<T> v) {
  T old = *p;
  *p = old | v;
  return old;
}

// ---- arithmetic built-ins
// ------------------------------------------------------------------------ CUDA's max/min:
// fmax/fmin for floating types (NaN ignored unless both are NaN).
template <class A, class B>
requires(std::is_arithmetic_v<A>&& std::is_arithmetic_v<B>) inline std::common_type_t<A, B> max(
    A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) {
    return std::fmax(C(a), C(b));
  } else {
    return C(a) < C(b) ? C(b) : C(a);
  }
}
template <class A, class B>
requires(std::is_arithmetic_v<A>&& std::is_arithmetic_v<B>) inline std::common_type_t<A, B> min(
    A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) {
    return std::fmin(C(a), C(b));
  } else {
    return C(b) < C(a) ? C(b) : C(a);
  }
}
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline double rsqrt(double x) {
  return 1.0 / std::sqrt(x);
}
// Correctly rounded single operations (the simulator's kernels are built with -ffp-contract=off,
// so a plain expression is never fused behind their back).
inline float __fmaf_rn(float a, float b, float c) {
  return std::fma(a, b, c);
}
inline double __fma_rn(double a, double b, double c) {
  return std::fma(a, b, c);
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline float __frcp_rn(float a) {
  return 1.0f / a;
}
inline float __fsqrt_rn(float a) {
  return std::sqrt(a);
}
inline double __dadd_rn(double a, double b) {
  return a + b;
}
inline double __dmul_rn(double a, double b) {
  return a * b;
}
inline double __ddiv_rn(double a, double b) {
  return a / b;
}
inline double __dsqrt_rn(double a) {
  return std::sqrt(a);
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __logf(float x) {
  return std::log(x);
}
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float __saturatef(float x) {
  return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __popcll(unsigned long long x) {
  return __builtin_popcountll(x);
}
inline int __clz(int x) {
  return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x));
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
