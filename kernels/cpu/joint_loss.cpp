#include "kernels/cpu/joint_loss.h"
#include "kernels/fast_math.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/strided.h"

namespace mel::kernels::cpu {

namespace {

// Elements of work per chunk of rows. The partition depends only on the problem's sizes (never on
// the thread count), which is what makes the batch sums reproducible.
constexpr int64_t kChunkWork = 8192;
// Below this many elements in all (a typical B = 256 step of a few heads) thread start-up and the
// two barriers cost more than the work; the serial path gives bitwise the same results.
constexpr int64_t kParallelWork = 65536;
// Row losses need log(sum_c exp(x_c - max)) with the sum in [1, C]; products of those sums are
// accumulated and their log taken only when the product grows past this (or at the end of a
// chunk), which saves almost every log call.
constexpr double kFlushProduct = 1e250;



// By value, so that it compiles to one max instruction.
template <class T>
T max_of(T a, T b) {
  return a < b ? b : a;
}

// Four independent chains, so that short rows are not bound by the max latency.
template <class T>
T row_max(const T* x, int64_t C) {
  T m0 = x[0], m1 = x[0], m2 = x[0], m3 = x[0];
  int64_t c = 1;
  for (; c + 4 <= C; c += 4) {
    m0 = max_of(m0, x[c]);
    m1 = max_of(m1, x[c + 1]);
    m2 = max_of(m2, x[c + 2]);
    m3 = max_of(m3, x[c + 3]);
  }
  for (; c < C; ++c) m0 = max_of(m0, x[c]);
  return max_of(max_of(m0, m1), max_of(m2, m3));
}

// sum_{i < n} f(i) in double over four partial sums combined in a fixed order (named variables
// rather than an array: GCC spills arrays of lanes and reloads them with wider loads, which stall
// on store forwarding).
template <class F>
double lane_sum(int64_t n, F&& f) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += f(i);
    s1 += f(i + 1);
    s2 += f(i + 2);
    s3 += f(i + 3);
  }
  for (; i < n; ++i) s0 += f(i);
  return (s0 + s1) + (s2 + s3);
}

// Per chunk and term: the loss of the rows seen so far as (linear part) + log(product) + logs.
struct TermAcc {
  double linear = 0, logs = 0, product = 1;
  double finish() const { return linear + logs + std::log(product); }
};

// One term over `rows` consecutive rows (x: their contiguous [rows, C] logits, y: their labels):
// folds the rows' cross-entropy into `acc` and writes scale * (softmax - smoothed one-hot) into g
// ([rows, C]), which also holds the shifted logits and their exponentials on the way. The exp
// runs over the whole block at once, so that short rows (C = 10) do not leave most of it to
// scalar loop tails.
template <class T>
void term_block(const T* x, int64_t rows, int64_t C, const int64_t* y, double eps, double scale,
                T* g, TermAcc* acc) {
  const double inv_c = 1.0 / static_cast<double>(C);
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* gr = g + r * C;
    const T m = row_max(xr, C);
    for (int64_t c = 0; c < C; ++c) gr[c] = xr[c] - m;
    // row loss = lse - (1 - eps) x_y - eps mean(x), lse = m + log(s)
    double lin = static_cast<double>(m) - (1.0 - eps) * static_cast<double>(xr[y[r]]);
    // Skipped when eps == 0 so that a -inf logit of another class does not turn 0 * inf into NaN.
    if (eps > 0) {
      lin -= eps * inv_c * lane_sum(C, [xr](int64_t c) { return static_cast<double>(xr[c]); });
    }
    acc->linear += lin;
  }
  const int64_t n = rows * C;
  for (int64_t i = 0; i < n; ++i) g[i] = exp_fast(g[i]);
  const T sc = static_cast<T>(scale);
  const T off = static_cast<T>(eps * inv_c);
  const T on = static_cast<T>((1.0 - eps) * scale);
  for (int64_t r = 0; r < rows; ++r) {
    T* gr = g + r * C;
    const double s = lane_sum(C, [gr](int64_t c) { return static_cast<double>(gr[c]); });
    acc->product *= s;
    if (acc->product > kFlushProduct) {
      acc->logs += std::log(acc->product);
      acc->product = 1;
    }
    if (scale == 0.0) continue;
    const T inv = static_cast<T>(1.0 / s);
    for (int64_t c = 0; c < C; ++c) gr[c] = (gr[c] * inv - off) * sc;
    gr[y[r]] -= on;
  }
  if (scale == 0.0) std::fill(g, g + n, T(0));
}

// The three phases of the fused loss over a fixed partition of the rows into chunks.
template <class T>
class JointLoss {
 public:
  explicit JointLoss(const JointLossArgs<T>& a) : a_(a) {
    K_ = a.num_terms;
    B_ = a.batch;
    P_ = a.num_pairs;
    inv_b_ = 1.0 / static_cast<double>(B_);
    want_grad_ = a.grads != nullptr;
    int64_t max_width = 0;
    for (int64_t k = 0; k < K_; ++k) {
      row_work_ += a.widths[k];
      max_width = std::max(max_width, a.widths[k]);
    }
    for (int64_t p = 0; p < P_; ++p) row_work_ += a.widths[a.pair_i[p]];
    rows_per_chunk_ = std::max<int64_t>(1, kChunkWork / std::max<int64_t>(row_work_, 1));
    chunks_ = (B_ + rows_per_chunk_ - 1) / rows_per_chunk_;
    stride_ = K_ + P_;
    partial_.assign(static_cast<size_t>(chunks_ * stride_), 0.0);
    coef_.assign(static_cast<size_t>(P_), 0.0);
    // Without gradients the exponentials still need somewhere to go: one block per chunk.
    scratch_size_ = want_grad_ ? 0 : static_cast<size_t>(rows_per_chunk_ * max_width);
  }

  void run() {
    if (chunks_ == 1 || B_ * row_work_ < kParallelWork) {
      for (int64_t ch = 0; ch < chunks_; ++ch) losses_and_ce_grads(ch);
      reduce();
      if (want_grad_ && any_active_) {
        for (int64_t ch = 0; ch < chunks_; ++ch) hinge_grads(ch);
      }
      return;
    }
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (int64_t ch = 0; ch < chunks_; ++ch) losses_and_ce_grads(ch);
        // the implicit barriers of `for` and `single` order the three phases
#pragma omp single
      reduce();
      if (want_grad_ && any_active_) {
#pragma omp for schedule(static)
        for (int64_t ch = 0; ch < chunks_; ++ch) hinge_grads(ch);
      }
    }
  }

 private:
  int64_t chunk_rows(int64_t chunk) const {
    return std::min(B_, chunk * rows_per_chunk_ + rows_per_chunk_) - chunk * rows_per_chunk_;
  }

  // partial_[chunk * (K + P) + i]: the chunk's sum of term i's row losses (i < K) or of pair
  // i - K's squared distances.
  void losses_and_ce_grads(int64_t chunk) {
    const int64_t b0 = chunk * rows_per_chunk_;
    const int64_t rows = chunk_rows(chunk);
    std::vector<T> scratch(scratch_size_);
    for (int64_t k = 0; k < K_; ++k) {
      const int64_t C = a_.widths[k];
      const int64_t* y = ((a_.coarse && a_.coarse[k]) ? a_.coarse_labels : a_.labels) + b0;
      T* g = want_grad_ ? a_.grads[k] + b0 * C : scratch.data();
      TermAcc acc;
      term_block<T>(a_.logits[k] + b0 * C, rows, C, y, a_.label_smoothing,
                    want_grad_ ? a_.weights[k] * inv_b_ : 0.0, g, &acc);
      partial_[chunk * stride_ + k] = acc.finish();
    }
    for (int64_t p = 0; p < P_; ++p) {
      const int64_t C = a_.widths[a_.pair_i[p]];
      const T* zi = a_.logits[a_.pair_i[p]] + b0 * C;
      const T* zj = a_.logits[a_.pair_j[p]] + b0 * C;
      // the chunk's rows are contiguous, so their distances are one flat sum
      const double dist = lane_sum(rows * C, [zi, zj](int64_t i) {
        const double d = static_cast<double>(zi[i]) - static_cast<double>(zj[i]);
        return d * d;
      });
      partial_[chunk * stride_ + K_ + p] = dist;
    }
  }

  void reduce() {
    double total = 0, diversity = 0;
    for (int64_t i = 0; i < stride_; ++i) {
      double s = 0;
      for (int64_t ch = 0; ch < chunks_; ++ch) s += partial_[ch * stride_ + i];
      if (i < K_) {
        const double loss = s * inv_b_;
        if (a_.term_loss) a_.term_loss[i] = loss;
        total += a_.weights[i] * loss;
        continue;
      }
      const int64_t p = i - K_;
      const double dist = s * inv_b_;
      if (a_.pair_dist) a_.pair_dist[p] = dist;
      const double gap = a_.diversity_margin - dist;
      if (gap > 0) {
        diversity += gap;
        if (a_.diversity_weight != 0.0) {
          coef_[p] = -a_.diversity_weight * 2.0 * inv_b_;
          any_active_ = true;
        }
      }
    }
    total += a_.diversity_weight * diversity;
    if (a_.diversity) *a_.diversity = diversity;
    if (a_.total) *a_.total = total;
    if (a_.total_out) *a_.total_out = static_cast<T>(total);
  }

  // d/dz_i = coef (z_i - z_j), d/dz_j = -coef (z_i - z_j) for every active pair, flat over the
  // chunk's contiguous rows.
  void hinge_grads(int64_t chunk) {
    const int64_t b0 = chunk * rows_per_chunk_;
    const int64_t rows = chunk_rows(chunk);
    for (int64_t p = 0; p < P_; ++p) {
      if (coef_[p] == 0.0) continue;
      const int64_t C = a_.widths[a_.pair_i[p]];
      const T* zi = a_.logits[a_.pair_i[p]] + b0 * C;
      const T* zj = a_.logits[a_.pair_j[p]] + b0 * C;
      T* gi = a_.grads[a_.pair_i[p]] + b0 * C;
      T* gj = a_.grads[a_.pair_j[p]] + b0 * C;
      const T cf = static_cast<T>(coef_[p]);
      const int64_t n = rows * C;
      for (int64_t i = 0; i < n; ++i) {
        const T v = cf * (zi[i] - zj[i]);
        gi[i] += v;
        gj[i] -= v;
      }
    }
  }

  const JointLossArgs<T>& a_;
  int64_t K_ = 0, B_ = 0, P_ = 0, row_work_ = 0, rows_per_chunk_ = 1, chunks_ = 0, stride_ = 0;
  double inv_b_ = 0;
  bool want_grad_ = false, any_active_ = false;
  size_t scratch_size_ = 0;
  std::vector<double> partial_, coef_;  // coef_: hinge gradient factor per pair
};

// Writes label_check (when given) and says whether every label of every term is in range.
template <class T>
bool labels_in_range(const JointLossArgs<T>& a) {
  bool ok = true;
  for (int64_t k = 0; k < a.num_terms; ++k) {
    const int64_t* y = (a.coarse && a.coarse[k]) ? a.coarse_labels : a.labels;
    const int64_t C = a.widths[k];
    int64_t bad = -1;
    for (int64_t b = 0; b < a.batch && bad < 0; ++b) {
      if (y[b] < 0 || y[b] >= C) bad = b;
    }
    if (a.label_check) {
      a.label_check[k] = bad;
      a.label_check[a.num_terms + k] = bad >= 0 ? y[bad] : 0;
    }
    ok = ok && bad < 0;
  }
  return ok;
}

}  // namespace

template <class T>
void joint_loss(const JointLossArgs<T>& a) {
  if (a.num_terms == 0 || a.batch == 0) return;
  if (!labels_in_range(a)) return;  // the caller reports label_check
  JointLoss<T>(a).run();
}

template <class T>
void scale_by_device_scalar(T* const* dst, const T* const* src, const int64_t* numel, int64_t count,
                            const T* factor) {
  const T f = *factor;
  for (int64_t k = 0; k < count; ++k) {
    parallel_for(numel[k], 32768, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) dst[k][i] = src[k][i] * f;
    });
  }
}

template void joint_loss<float>(const JointLossArgs<float>&);
template void joint_loss<double>(const JointLossArgs<double>&);
template void scale_by_device_scalar<float>(float* const*, const float* const*, const int64_t*,
                                            int64_t, const float*);
template void scale_by_device_scalar<double>(double* const*, const double* const*, const int64_t*,
                                             int64_t, const double*);

}  // namespace mel::kernels::cpu
