// CPU causal multi-head self-attention over packed projections (GPT style), forward and backward,
// fused: the forward keeps only the output and each row's log-sum-exp, and the backward recomputes
// the probabilities from q, k and that log-sum-exp (as flash attention does).
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// qkv: contiguous [B, L, 3 * D] with D = H * Dh: q, k and v in that order, head h at columns
// [h * Dh, (h + 1) * Dh) of each. For each (b, h) and query row i:
//   out[b, i, h * Dh + d] = sum_{j <= i} softmax_j(scale * q_i . k_j) v_j[d]   (out: [B, L, D])
//   lse[(b * H + h) * L + i] = log sum_{j <= i} exp(scale * q_i . k_j)          (lse: [B, H, L])
// T: float or double. Work is split over (b, h, block of query rows), each computed by one thread
// in a fixed order: the results do not depend on the thread count.
template <class T>
void causal_attention_forward(const T* qkv, int64_t B, int64_t L, int64_t H, int64_t Dh,
                              double scale, T* out, T* lse);

// From the forward's qkv, out and lse and the output gradient dout [B, L, D]: dqkv [B, L, 3 * D]
// (dq, dk, dv packed like qkv; every element written). delta [B, H, L] is scratch that receives
// rowsum(dout * out) per head. With P = exp(scale * q k^T - lse) (causal) and
// dS = P * (dout v^T - delta): dq = scale * dS k, dk = scale * dS^T q, dv = P^T dout. One thread
// per (b, h), in a fixed order.
template <class T>
void causal_attention_backward(const T* qkv, const T* out, const T* lse, const T* dout, int64_t B,
                               int64_t L, int64_t H, int64_t Dh, double scale, T* delta, T* dqkv);

}  // namespace mel::kernels::cpu
