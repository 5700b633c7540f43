// CPU reductions over the middle axis of a contiguous [A, R, B] block: out[a, b] = op over r of
// x[a, r, b]. Float sums accumulate in double.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mel::kernels::cpu {

// Scratch the reductions need (none on the CPU; the CUDA twins need some): the same queries on
// both backends, so an op asks once whatever its device.
template <class T>
size_t sum_axis_workspace_bytes(int64_t, int64_t, int64_t) {
  return 0;
}
template <class T>
size_t max_axis_workspace_bytes(int64_t, int64_t, int64_t) {
  return 0;
}

// T: float, double, int32_t, int64_t. `workspace` is unused on the CPU (may be null).
template <class T>
void sum_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out, void* workspace);

}  // namespace mel::kernels::cpu

namespace mel::kernels::cpu {

// out[a, b] = max over r of x[a, r, b]; idx[a, b] = first r attaining it (NaN wins, as in PyTorch).
template <class T>
void max_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out, int64_t* idx, void* workspace);
// gx = 0 except gx[a, idx[a, b], b] = g[a, b].
template <class T>
void max_axis_backward(const T* g, const int64_t* idx, int64_t A, int64_t R, int64_t B, T* gx);

}  // namespace mel::kernels::cpu
