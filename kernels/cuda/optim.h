// CUDA fused optimizer steps over flat f32 parameter/gradient buffers (the twins of
// kernels/cpu/optim.h), the deterministic squared-norm reduction and the gradient clipping scale.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cpu/optim.h"

namespace mel::kernels::cuda {

// Every buffer is device memory. The element formulas are the CPU kernels', with the same
// fused multiply-adds the CPU build (x86-64-v3, GCC's default contraction) emits, written as
// explicit round-to-nearest intrinsics so that nvcc cannot contract them differently: a step gives
// bitwise the CPU's parameters and state.

// PyTorch's SGD (see kernels/cpu/optim.h); `buf` may be null when momentum == 0.
void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum,
              float dampening, float weight_decay, bool nesterov, bool first, cudaStream_t stream);

// Adam / AdamW (decoupled); bias_correction1/2 = 1 - beta^step.
void adam_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
               float beta2, float eps, float weight_decay, bool decoupled, double bias_correction1,
               double bias_correction2, cudaStream_t stream);

// Partial sums squared_norm needs in its scratch buffer (one constant for both backends).
using cpu::kSquaredNormPartials;

// *out = sum(g^2) in double, written on the device (reading it back is the caller's choice).
// Deterministic for a given n and alignment of g (16-byte aligned buffers take the float4 path, so
// their partition differs from a misaligned buffer's): a fixed grid of fixed-order per-thread sums
// and block trees into `scratch` (kSquaredNormPartials doubles), then one block sums those in a
// fixed order. Not bitwise the CPU's sum (a different association), equal to double rounding.
void squared_norm(const float* g, int64_t n, double* out, double* scratch, cudaStream_t stream);

// Global-norm clipping without a host round trip: coef = max_norm / (sqrt(*squared_norm) + 1e-6),
// computed on the device from squared_norm's result; g *= float(coef) when coef < 1 (the CPU's
// clip_grad_norm arithmetic).
void clip_scale(float* g, int64_t n, const double* squared_norm, double max_norm,
                cudaStream_t stream);

}  // namespace mel::kernels::cuda
