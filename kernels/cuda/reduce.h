// CUDA reductions over the middle axis of a contiguous [A, R, B] block: the twins of
// kernels/cpu/reduce.h (sum, max with its index, max backward), on a stream.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace mel::kernels::cuda {

// Device scratch bytes sum_axis / max_axis need for this shape (0 when none): long rows or
// columns with few outputs are split across blocks, whose partial results meet in the scratch
// and are combined in a fixed order, so results do not depend on scheduling.
template <class T>
size_t sum_axis_workspace_bytes(int64_t A, int64_t R, int64_t B);
template <class T>
size_t max_axis_workspace_bytes(int64_t A, int64_t R, int64_t B);

// out[a, b] = sum over r of x[a, r, b]. T: float, double, int32_t, int64_t. Floats accumulate in
// double, integers in int64 (then wrap to T), as on the CPU. `workspace` holds at least
// sum_axis_workspace_bytes<T>(A, R, B) bytes (may be null when that is 0).
template <class T>
void sum_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out, void* workspace,
              cudaStream_t stream);

// out[a, b] = max over r of x[a, r, b]; idx[a, b] = first r attaining it (NaN wins). R >= 1.
// `workspace`: max_axis_workspace_bytes<T>(A, R, B) bytes.
template <class T>
void max_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out, int64_t* idx, void* workspace,
              cudaStream_t stream);
// gx = 0 except gx[a, idx[a, b], b] = g[a, b].
template <class T>
void max_axis_backward(const T* g, const int64_t* idx, int64_t A, int64_t R, int64_t B, T* gx,
                       cudaStream_t stream);

}  // namespace mel::kernels::cuda
