#include "kernels/cpu/joint_loss.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

namespace mel::kernels::cpu {

namespace {

// Elements of work per chunk of rows. The partition depends only on the problem's sizes (never on
// the thread count), which is what makes the batch sums reproducible.
constexpr int64_t kChunkWork = 8192;
// Below this many elements in all (a typical B = 256 step of a few heads) thread start-up and the
// two barriers cost more than the work; the serial path gives bitwise the same results.
constexpr int64_t kParallelWork = 65536;
// Reductions along a row keep this many independent partial results, combined in a fixed tree:
// MEL rows are short (C = 10 or 100), and one serial chain of dependent adds per row would bound
// the speed by the add latency; fixed lanes also vectorise without reassociating anything.
constexpr int kLanes = 8;
// Row losses need log(sum_c exp(x_c - max)) with the sum in [1, C]; products of those sums are
// accumulated and their log taken only when the product grows past this (or at the end of a
// chunk), which saves almost every log call.
constexpr double kFlushProduct = 1e250;

// Cephes' expf: exp(x) = 2^n exp(r), r = x - n ln2 in [-ln2/2, ln2/2], with a degree-6
// polynomial (about 1 ulp). Branch-free so that loops over it vectorise; NaN stays NaN.
inline float exp_fast(float x) {
  // The clamps keep a NaN x (comparisons with it are false), and rounding by adding 1.5 * 2^23
  // leaves n in the low mantissa bits, so no float-to-int conversion ever sees a NaN.
  float xs = x < -87.0f ? -87.0f : x;
  xs = xs > 88.0f ? 88.0f : xs;
  constexpr float kShifter = 12582912.0f;
  const float t = xs * 1.44269504088896341f + kShifter;
  const float n = t - kShifter;
  float r = xs - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t e = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kShifter);
  return p * std::bit_cast<float>((e + 127) << 23);
}

// f64 is the precision reference (gradchecks), so it keeps the library exp.
inline double exp_fast(double x) {
  return std::exp(x);
}

// By value (std::max returns a reference, which defeats if-conversion and so vectorisation).
template <class T>
T max_of(T a, T b) {
  return a < b ? b : a;
}

template <class T>
T row_max(const T* x, int64_t C) {
  if (C < kLanes) {
    T m = x[0];
    for (int64_t c = 1; c < C; ++c) m = max_of(m, x[c]);
    return m;
  }
  T lane[kLanes];
  for (int l = 0; l < kLanes; ++l) lane[l] = x[l];
  int64_t c = kLanes;
  for (; c + kLanes <= C; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] = max_of(lane[l], x[c + l]);
  }
  for (; c < C; ++c) lane[0] = max_of(lane[0], x[c]);
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int l = 0; l < w; ++l) lane[l] = max_of(lane[l], lane[l + w]);
  }
  return lane[0];
}

// sum_{c < C} f(c) in double, over kLanes partial sums in a fixed order.
template <class F>
double lane_sum(int64_t C, F&& f) {
  double lane[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += f(c + l);
  }
  double tail = 0;
  for (; c < C; ++c) tail += f(c);
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int l = 0; l < w; ++l) lane[l] += lane[l + w];
  }
  return lane[0] + tail;
}

// Per chunk and term: the loss of the rows seen so far as (linear part) + log(product) + logs.
struct TermAcc {
  double linear = 0, logs = 0, product = 1;
  double finish() const { return linear + logs + std::log(product); }
};

// Term k of one row (x: its C logits, label y): folds the row's cross-entropy into `acc` and
// writes scale * (softmax - smoothed one-hot) into g, which also holds the exponentials on the
// way (so each is computed once).
template <class T>
void term_row(const T* x, int64_t C, int64_t y, double eps, double scale, T* g, TermAcc* acc) {
  const T m = row_max(x, C);
  for (int64_t c = 0; c < C; ++c) g[c] = exp_fast(x[c] - m);
  const double s = lane_sum(C, [g](int64_t c) { return static_cast<double>(g[c]); });
  // row loss = lse - (1 - eps) x_y - eps mean(x), lse = m + log(s)
  double lin = static_cast<double>(m) - (1.0 - eps) * static_cast<double>(x[y]);
  // Skipped when eps == 0 so that a -inf logit of another class does not turn 0 * inf into NaN.
  if (eps > 0) {
    const double sx = lane_sum(C, [x](int64_t c) { return static_cast<double>(x[c]); });
    lin -= eps * sx / static_cast<double>(C);
  }
  acc->linear += lin;
  acc->product *= s;
  if (acc->product > kFlushProduct) {
    acc->logs += std::log(acc->product);
    acc->product = 1;
  }
  if (scale == 0.0) {
    std::fill(g, g + C, T(0));
    return;
  }
  const T inv = static_cast<T>(1.0 / s);
  const T sc = static_cast<T>(scale);
  const T off = static_cast<T>(eps / static_cast<double>(C));
  for (int64_t c = 0; c < C; ++c) g[c] = (g[c] * inv - off) * sc;
  g[y] -= static_cast<T>((1.0 - eps) * scale);
}

}  // namespace

template <class T>
void joint_loss(const JointLossArgs<T>& a) {
  const int64_t K = a.num_terms, B = a.batch, P = a.num_pairs;
  if (K == 0 || B == 0) return;
  const double eps = a.label_smoothing;
  const double inv_b = 1.0 / static_cast<double>(B);
  const bool want_grad = a.grads != nullptr;

  int64_t row_work = 0, max_width = 0;
  for (int64_t k = 0; k < K; ++k) {
    row_work += a.widths[k];
    max_width = std::max(max_width, a.widths[k]);
  }
  for (int64_t p = 0; p < P; ++p) row_work += a.widths[a.pair_i[p]];
  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkWork / std::max<int64_t>(row_work, 1));
  const int64_t chunks = (B + rows_per_chunk - 1) / rows_per_chunk;

  // partial[chunk * (K + P) + i]: the chunk's sum of term i's row losses (i < K) or of pair
  // i - K's squared distances.
  const int64_t stride = K + P;
  std::vector<double> partial(static_cast<size_t>(chunks * stride), 0.0);
  std::vector<double> coef(static_cast<size_t>(P), 0.0);  // hinge gradient factor per pair
  bool any_active = false;

  auto losses_and_ce_grads = [&](int64_t chunk) {
    std::vector<TermAcc> acc(static_cast<size_t>(K));
    double* dist = partial.data() + chunk * stride + K;
    // without gradients the exponentials still need somewhere to go
    std::vector<T> scratch(want_grad ? 0 : static_cast<size_t>(max_width));
    const int64_t b1 = std::min(B, (chunk + 1) * rows_per_chunk);
    for (int64_t b = chunk * rows_per_chunk; b < b1; ++b) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t C = a.widths[k];
        const int64_t y = (a.coarse && a.coarse[k]) ? a.coarse_labels[b] : a.labels[b];
        T* g = want_grad ? a.grads[k] + b * C : scratch.data();
        term_row<T>(a.logits[k] + b * C, C, y, eps, want_grad ? a.weights[k] * inv_b : 0.0, g,
                    &acc[k]);
      }
      for (int64_t p = 0; p < P; ++p) {
        const int64_t C = a.widths[a.pair_i[p]];
        const T* zi = a.logits[a.pair_i[p]] + b * C;
        const T* zj = a.logits[a.pair_j[p]] + b * C;
        dist[p] += lane_sum(C, [zi, zj](int64_t c) {
          const double d = static_cast<double>(zi[c]) - static_cast<double>(zj[c]);
          return d * d;
        });
      }
    }
    for (int64_t k = 0; k < K; ++k) partial[chunk * stride + k] = acc[k].finish();
  };

  auto reduce = [&]() {
    double total = 0, diversity = 0;
    for (int64_t i = 0; i < stride; ++i) {
      double s = 0;
      for (int64_t ch = 0; ch < chunks; ++ch) s += partial[ch * stride + i];
      if (i < K) {
        const double loss = s * inv_b;
        if (a.term_loss) a.term_loss[i] = loss;
        total += a.weights[i] * loss;
      } else {
        const int64_t p = i - K;
        const double dist = s * inv_b;
        if (a.pair_dist) a.pair_dist[p] = dist;
        const double gap = a.diversity_margin - dist;
        if (gap > 0) {
          diversity += gap;
          if (a.diversity_weight != 0.0) {
            coef[p] = -a.diversity_weight * 2.0 * inv_b;
            any_active = true;
          }
        }
      }
    }
    total += a.diversity_weight * diversity;
    if (a.diversity) *a.diversity = diversity;
    if (a.total) *a.total = total;
  };

  // d/dz_i = coef (z_i - z_j), d/dz_j = -coef (z_i - z_j) for every active pair.
  auto hinge_grads = [&](int64_t chunk) {
    const int64_t b1 = std::min(B, (chunk + 1) * rows_per_chunk);
    for (int64_t b = chunk * rows_per_chunk; b < b1; ++b) {
      for (int64_t p = 0; p < P; ++p) {
        if (coef[p] == 0.0) continue;
        const int64_t C = a.widths[a.pair_i[p]];
        const T* zi = a.logits[a.pair_i[p]] + b * C;
        const T* zj = a.logits[a.pair_j[p]] + b * C;
        T* gi = a.grads[a.pair_i[p]] + b * C;
        T* gj = a.grads[a.pair_j[p]] + b * C;
        const T cf = static_cast<T>(coef[p]);
        for (int64_t c = 0; c < C; ++c) {
          const T v = cf * (zi[c] - zj[c]);
          gi[c] += v;
          gj[c] -= v;
        }
      }
    }
  };

  if (chunks == 1 || B * row_work < kParallelWork) {
    for (int64_t ch = 0; ch < chunks; ++ch) losses_and_ce_grads(ch);
    reduce();
    if (want_grad && any_active) {
      for (int64_t ch = 0; ch < chunks; ++ch) hinge_grads(ch);
    }
    return;
  }
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < chunks; ++ch) losses_and_ce_grads(ch);
    // the implicit barriers of `for` and `single` order the three phases
#pragma omp single
    reduce();
    if (want_grad && any_active) {
#pragma omp for schedule(static)
      for (int64_t ch = 0; ch < chunks; ++ch) hinge_grads(ch);
    }
  }
}

template void joint_loss<float>(const JointLossArgs<float>&);
template void joint_loss<double>(const JointLossArgs<double>&);

}  // namespace mel::kernels::cpu
