// CUDA causal multi-head self-attention over packed projections: the twins of
// kernels/cpu/attention.h, with the stream last.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mel::kernels::cuda {

// The largest head dim Dh the kernels take: their tiles live in static shared memory. A larger one
// throws mel::Error (the op checks first).
constexpr int64_t kAttentionMaxHeadDim = 128;

// As the CPU kernel: flash-attention style, one block per (b, h, tile of query rows), key and value
// tiles in shared memory, an online softmax; out and lse written. T: float or double.
template <class T>
void causal_attention_forward(const T* qkv, int64_t B, int64_t L, int64_t H, int64_t Dh,
                              double scale, T* out, T* lse, cudaStream_t stream);

// As the CPU kernel: one kernel computes delta = rowsum(dout * out), one dq (a block per tile of
// query rows, looping over key tiles), one dk and dv (a block per tile of key rows, looping over
// query tiles); the probabilities are recomputed from lse. No atomics: every output element is
// summed by one thread in a fixed order, so results repeat bitwise.
template <class T>
void causal_attention_backward(const T* qkv, const T* out, const T* lse, const T* dout, int64_t B,
                               int64_t L, int64_t H, int64_t Dh, double scale, T* delta, T* dqkv,
                               cudaStream_t stream);

}  // namespace mel::kernels::cuda
