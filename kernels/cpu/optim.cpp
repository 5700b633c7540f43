#include "kernels/cpu/optim.h"

#include <cmath>
#include <vector>

#include "kernels/strided.h"

namespace mel::kernels::cpu {

namespace {
constexpr int64_t kGrain = 1 << 15;
}

void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum,
              float dampening, float weight_decay, bool nesterov, bool first) {
  parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float d = g[i] + weight_decay * p[i];
      if (momentum != 0.0f) {
        const float b = first ? d : momentum * buf[i] + (1.0f - dampening) * d;
        buf[i] = b;
        d = nesterov ? d + momentum * b : b;
      }
      p[i] -= lr * d;
    }
  });
}

void adam_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
               float beta2, float eps, float weight_decay, bool decoupled, double bias_correction1,
               double bias_correction2) {
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bias_correction2));
  const float decay = decoupled ? 1.0f - lr * weight_decay : 1.0f;
  const float l2 = decoupled ? 0.0f : weight_decay;
  parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float gi = g[i] + l2 * p[i];
      const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
      const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) * inv_sqrt_bc2 + eps;
      p[i] = p[i] * decay - step_size * mi / denom;
    }
  });
}

void squared_norm(const float* g, int64_t n, double* out, double*) {
  // Fixed-size chunks summed in order: the result does not depend on the thread count.
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks), 0.0);
  parallel_for(chunks, 4, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const int64_t b = c * kChunk, e = std::min(n, b + kChunk);
      double s = 0.0;
      for (int64_t i = b; i < e; ++i) s += static_cast<double>(g[i]) * g[i];
      part[static_cast<size_t>(c)] = s;
    }
  });
  double total = 0.0;
  for (double s : part) total += s;
  *out = total;
}

void scale(float* g, int64_t n, float factor) {
  parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) g[i] *= factor;
  });
}

void clip_scale(float* g, int64_t n, const double* squared_norm, double max_norm) {
  const double coef = max_norm / (std::sqrt(*squared_norm) + 1e-6);
  if (coef < 1.0) scale(g, n, static_cast<float>(coef));
}

}  // namespace mel::kernels::cpu
