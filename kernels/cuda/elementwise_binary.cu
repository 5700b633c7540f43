#include <type_traits>

#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/elementwise_impl.cuh"

namespace mel::kernels::cuda {
namespace {

// The same expressions as kernels/cpu/elementwise.cpp (NaN handling of maximum/minimum included:
// the first operand is kept unless the comparison is true).
template <class T, BinaryOp Op>
struct BinaryF {
  __device__ __forceinline__ T operator()(T u, T v) const {
    if constexpr (Op == BinaryOp::add) {
      return static_cast<T>(u + v);
    } else if constexpr (Op == BinaryOp::sub) {
      return static_cast<T>(u - v);
    } else if constexpr (Op == BinaryOp::mul) {
      return static_cast<T>(u * v);
    } else if constexpr (Op == BinaryOp::div) {
      if constexpr (std::is_integral_v<T>) {
        return v == T(0) ? T(0) : static_cast<T>(u / v);
      } else {
        return u / v;
      }
    } else if constexpr (Op == BinaryOp::maximum) {
      return u < v ? v : u;
    } else {
      return v < u ? v : u;
    }
  }
};

template <class T, CompareOp Op>
struct CompareF {
  __device__ __forceinline__ uint8_t operator()(T u, T v) const {
    bool r;
    if constexpr (Op == CompareOp::eq) {
      r = u == v;
    } else if constexpr (Op == CompareOp::ne) {
      r = u != v;
    } else if constexpr (Op == CompareOp::lt) {
      r = u < v;
    } else if constexpr (Op == CompareOp::le) {
      r = u <= v;
    } else if constexpr (Op == CompareOp::gt) {
      r = u > v;
    } else {
      r = u >= v;
    }
    return r ? uint8_t(1) : uint8_t(0);
  }
};

template <class T>
struct WhereF {
  __device__ __forceinline__ T operator()(uint8_t c, T u, T v) const { return c ? u : v; }
};

}  // namespace

template <class T>
void binary(BinaryOp op, const Iter<3>& it, T* out, const T* a, const T* b, cudaStream_t stream) {
  switch (op) {
    case BinaryOp::add:
      return ew::launch(it, stream, BinaryF<T, BinaryOp::add>{}, out, a, b);
    case BinaryOp::sub:
      return ew::launch(it, stream, BinaryF<T, BinaryOp::sub>{}, out, a, b);
    case BinaryOp::mul:
      return ew::launch(it, stream, BinaryF<T, BinaryOp::mul>{}, out, a, b);
    case BinaryOp::div:
      return ew::launch(it, stream, BinaryF<T, BinaryOp::div>{}, out, a, b);
    case BinaryOp::maximum:
      return ew::launch(it, stream, BinaryF<T, BinaryOp::maximum>{}, out, a, b);
    case BinaryOp::minimum:
      return ew::launch(it, stream, BinaryF<T, BinaryOp::minimum>{}, out, a, b);
  }
}

template <class T>
void compare(CompareOp op, const Iter<3>& it, uint8_t* out, const T* a, const T* b,
             cudaStream_t stream) {
  switch (op) {
    case CompareOp::eq:
      return ew::launch(it, stream, CompareF<T, CompareOp::eq>{}, out, a, b);
    case CompareOp::ne:
      return ew::launch(it, stream, CompareF<T, CompareOp::ne>{}, out, a, b);
    case CompareOp::lt:
      return ew::launch(it, stream, CompareF<T, CompareOp::lt>{}, out, a, b);
    case CompareOp::le:
      return ew::launch(it, stream, CompareF<T, CompareOp::le>{}, out, a, b);
    case CompareOp::gt:
      return ew::launch(it, stream, CompareF<T, CompareOp::gt>{}, out, a, b);
    case CompareOp::ge:
      return ew::launch(it, stream, CompareF<T, CompareOp::ge>{}, out, a, b);
  }
}

template <class T>
void where(const Iter<4>& it, T* out, const uint8_t* cond, const T* a, const T* b,
           cudaStream_t stream) {
  ew::launch(it, stream, WhereF<T>{}, out, cond, a, b);
}

#define MEL_INSTANTIATE_NUMERIC(T)                                                                 \
  template void binary<T>(BinaryOp, const Iter<3>&, T*, const T*, const T*, cudaStream_t);         \
  template void compare<T>(CompareOp, const Iter<3>&, uint8_t*, const T*, const T*, cudaStream_t); \
  template void where<T>(const Iter<4>&, T*, const uint8_t*, const T*, const T*, cudaStream_t);
MEL_INSTANTIATE_NUMERIC(float)
MEL_INSTANTIATE_NUMERIC(double)
MEL_INSTANTIATE_NUMERIC(int32_t)
MEL_INSTANTIATE_NUMERIC(int64_t)
MEL_INSTANTIATE_NUMERIC(uint8_t)
#undef MEL_INSTANTIATE_NUMERIC

}  // namespace mel::kernels::cuda
