// CPU reductions over the middle axis of a contiguous [A, R, B] block: out[a, b] = op over r of
// x[a, r, b]. Float sums accumulate in double.
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// T: float, double, int32_t, int64_t.
template <class T>
void sum_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out);

}  // namespace mel::kernels::cpu

namespace mel::kernels::cpu {

// out[a, b] = max over r of x[a, r, b]; idx[a, b] = first r attaining it (NaN wins, as in PyTorch).
template <class T>
void max_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out, int64_t* idx);
// gx = 0 except gx[a, idx[a, b], b] = g[a, b].
template <class T>
void max_axis_backward(const T* g, const int64_t* idx, int64_t A, int64_t R, int64_t B, T* gx);

}  // namespace mel::kernels::cpu
