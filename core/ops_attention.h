// Fused causal multi-head self-attention (GPT style) from packed q, k, v projections.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mel {

// Causal multi-head self-attention from packed projections, as GPT models use it.
// qkv: [B, T, 3*D] (q, k, v each D = heads * Dh wide, in that order; within each, head h is
// columns [h*Dh, (h+1)*Dh)) -> out [B, T, D] where out[b, t, h*Dh:(h+1)*Dh] =
// sum_{s<=t} softmax_s(q_t . k_s * scale) v_s for head h; scale = 1/sqrt(Dh) unless scale > 0
// given. PyTorch: q, k, v = qkv.split(D, 2), each .view(B, T, H, Dh).transpose(1, 2),
// F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D).
// f32 and f64 natively, bf16 / f16 through f32. Fused: autograd keeps qkv, out and each row's
// log-sum-exp [B, heads, T], never a T x T matrix; backward recomputes the probabilities. On a GPU
// the head dim Dh is at most 128.
Tensor causal_self_attention(const Tensor& qkv, int64_t heads, double scale = 0.0);

}  // namespace mel
