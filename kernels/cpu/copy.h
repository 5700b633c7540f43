// CPU dtype-converting strided copy and fill (header-only: instantiated for every pair of types),
// the twins of kernels/cuda/copy.h.
#pragma once
#include <cstdint>
#include <type_traits>

#include "kernels/half.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {

template <class D, class S>
inline D convert(S s) {
  if constexpr (std::is_same_v<D, S>) {
    return s;
  } else if constexpr (std::is_same_v<D, bfloat16> || std::is_same_v<D, half>) {
    return D(static_cast<float>(s));
  } else if constexpr (std::is_same_v<S, bfloat16> || std::is_same_v<S, half>) {
    return static_cast<D>(static_cast<float>(s));
  } else {
    return static_cast<D>(s);
  }
}

// dst = convert(src); operands of `it`: 0 dst, 1 src.
template <class D, class S>
void copy(const Iter<2>& it, D* dst, const S* src) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    D* d = dst + off[0];
    const S* s = src + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) d[i] = convert<D>(s[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) d[i * st[0]] = convert<D>(s[i * st[1]]);
    }
  });
}

// dst[i] = value for a strided destination (operand 0 of a one-operand walk).
template <class T>
void fill(const Iter<1>& it, T* dst, T value) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    T* d = dst + off[0];
    for (int64_t i = 0; i < n; ++i) d[i * st[0]] = value;
  });
}

}  // namespace mel::kernels::cpu
