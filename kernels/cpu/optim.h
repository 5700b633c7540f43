// Fused optimizer steps over flat f32 parameter/gradient buffers (one pass each) and the
// squared-norm reduction behind global gradient clipping.
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// PyTorch's SGD: g += wd * p; buf = first ? g : momentum * buf + (1 - dampening) * g;
// g = nesterov ? g + momentum * buf : buf (when momentum != 0); p -= lr * g. `buf` may be null
// when momentum == 0.
void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum,
              float dampening, float weight_decay, bool nesterov, bool first);

// Adam (decoupled == false: L2 added to the gradient) and AdamW (decoupled == true:
// p *= 1 - lr * wd). bias_correction1/2 = 1 - beta^step.
void adam_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
               float beta2, float eps, float weight_decay, bool decoupled, double bias_correction1,
               double bias_correction2);

// Doubles of scratch squared_norm may use (the CUDA twin's partial sums; unused on the CPU).
inline constexpr int kSquaredNormPartials = 1024;

// *out = sum(g^2) in double, deterministic for a given n (fixed partition of the work).
void squared_norm(const float* g, int64_t n, double* out, double* scratch);
void scale(float* g, int64_t n, float factor);

// Global-norm clipping: coef = max_norm / (sqrt(*squared_norm) + 1e-6); g *= float(coef) when
// coef < 1 (a NaN norm leaves g alone).
void clip_scale(float* g, int64_t n, const double* squared_norm, double max_norm);

}  // namespace mel::kernels::cpu
