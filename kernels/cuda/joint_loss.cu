#include <algorithm>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/joint_loss.h"
#include "kernels/cuda/launch.cuh"

namespace mel::kernels::cuda {

namespace {

// Terms and pairs go to the kernels by value (no host-to-device copy, so the launches can also be
// captured in a CUDA graph), in groups small enough for the 4 KiB parameter space.
constexpr int kItemsPerLaunch = 32;
constexpr int kHingePairsPerLaunch = 32;
constexpr int kWarpsPerBlock = kBlock / kWarp;

// A term (z == nullptr) or a pair (z_i = x, z_j = z) of the problem; `slot` is its row of the
// per-row workspace and its index in the outputs (terms 0..K-1, pairs K..K+P-1).
template <class T>
struct Item {
  const T* x = nullptr;
  const T* z = nullptr;
  T* g = nullptr;              // term gradient, null when not wanted
  const int64_t* y = nullptr;  // term labels
  int64_t C = 0;
  double weight = 0;  // w_k
  double scale = 0;   // w_k / B when gradients are wanted
  int64_t slot = 0;
};

template <class T>
struct ItemGroup {
  Item<T> item[kItemsPerLaunch];
  int count = 0;
};

struct Problem {
  int64_t K = 0, P = 0, B = 0;
  double eps = 0, inv_b = 0, margin = 0, lambda = 0;
};

template <class T>
struct HingePair {
  const T* zi = nullptr;
  const T* zj = nullptr;
  int64_t i = 0, j = 0, index = 0;
};

template <class T>
struct HingeTerm {
  T* g = nullptr;
  int64_t n = 0;  // B * C
  int64_t k = 0;
};

template <class T>
struct HingeGroup {
  HingePair<T> pair[kHingePairsPerLaunch];
  HingeTerm<T> term[2 * kHingePairsPerLaunch];
  int num_pairs = 0, num_terms = 0;
};

__device__ __forceinline__ float exp_t(float x) {
  return expf(x);
}
__device__ __forceinline__ double exp_t(double x) {
  return exp(x);
}

// (1) One warp per (item, row), items outer so that consecutive warps read consecutive rows.
// rows[slot * B + b] = the row's cross-entropy (term) or squared distance (pair).
template <class T>
__global__ void rows_kernel(ItemGroup<T> group, Problem pr, double* __restrict__ rows) {
  const int lane = threadIdx.x % kWarp;
  const int64_t tasks = int64_t(group.count) * pr.B;
  const int64_t warp0 = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / kWarp;
  // The loop bound is uniform over a warp, so every lane reaches every shuffle.
  for (int64_t w = warp0; w < tasks; w += int64_t(gridDim.x) * kWarpsPerBlock) {
    const Item<T>& it = group.item[w / pr.B];
    const int64_t b = w % pr.B;
    const int64_t C = it.C;
    const T* xr = it.x + b * C;
    if (it.z) {
      const T* zr = it.z + b * C;
      double d2 = 0;
      for (int64_t c = lane; c < C; c += kWarp) {
        const double d = static_cast<double>(xr[c]) - static_cast<double>(zr[c]);
        d2 += d * d;
      }
      d2 = warp_sum(d2);
      if (lane == 0) rows[it.slot * pr.B + b] = d2;
      continue;
    }
    const int64_t y = it.y[b];
    const bool valid = y >= 0 && y < C;  // the reduce kernel reports an invalid label
    T m = xr[0];
    for (int64_t c = lane; c < C; c += kWarp) m = max(m, xr[c]);
    m = warp_max(m);
    T* gr = it.g ? it.g + b * C : nullptr;
    double s = 0, sx = 0;
    for (int64_t c = lane; c < C; c += kWarp) {
      const T e = exp_t(static_cast<T>(xr[c] - m));
      if (gr) gr[c] = e;
      s += static_cast<double>(e);
      sx += static_cast<double>(xr[c]);
    }
    s = warp_sum(s);
    const double eps = pr.eps;
    const double inv_c = 1.0 / static_cast<double>(C);
    // eps mean(x) is skipped when eps == 0 so that a -inf logit of another class does not turn
    // 0 * inf into NaN (as on the CPU). eps is uniform over the warp.
    if (eps > 0) sx = warp_sum(sx);
    if (lane == 0) {
      // loss = lse - (1 - eps) x_y - eps mean(x), lse = m + log(s)
      double lin = static_cast<double>(m);
      if (valid) lin -= (1.0 - eps) * static_cast<double>(xr[y]);
      if (eps > 0) lin -= eps * inv_c * sx;
      rows[it.slot * pr.B + b] = lin + log(s);
    }
    if (!gr) continue;
    if (it.scale == 0.0) {
      for (int64_t c = lane; c < C; c += kWarp) gr[c] = T(0);
      continue;
    }
    // Each lane rewrites the exponentials it stored itself above.
    const T inv = static_cast<T>(1.0 / s);
    const T sc = static_cast<T>(it.scale);
    const T off = static_cast<T>(eps * inv_c);
    const T on = static_cast<T>((1.0 - eps) * it.scale);
    for (int64_t c = lane; c < C; c += kWarp) {
      T v = (gr[c] * inv - off) * sc;
      if (c == y) v -= on;
      gr[c] = v;
    }
  }
}

// (2) One block per item: the batch sum of its rows in a fixed order, then its outputs. Terms
// also find their first invalid label; pairs decide whether their hinge is active.
template <class T>
__global__ void reduce_kernel(ItemGroup<T> group, Problem pr, const double* __restrict__ rows,
                              double* __restrict__ term_loss, double* __restrict__ pair_dist,
                              int64_t* __restrict__ label_check, double* __restrict__ contrib,
                              double* __restrict__ coef) {
  __shared__ double dscratch[kWarpsPerBlock];
  __shared__ long long iscratch[kWarpsPerBlock];
  const Item<T>& it = group.item[blockIdx.x];
  const int64_t B = pr.B;
  double s = 0;
  long long first_bad = 0;  // B - row of the first invalid label seen (0: none), maximised
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    s += rows[it.slot * B + b];
    if (!it.z && first_bad == 0) {
      const int64_t y = it.y[b];
      if (y < 0 || y >= it.C) first_bad = B - b;
    }
  }
  s = block_sum(s, dscratch);
  if (!it.z) first_bad = block_max(first_bad, iscratch, 0LL);
  if (threadIdx.x != 0) return;
  const int64_t slot = it.slot;
  if (!it.z) {
    const double loss = s * pr.inv_b;
    term_loss[slot] = loss;
    contrib[slot] = it.weight * loss;
    const int64_t row = first_bad > 0 ? B - first_bad : -1;
    label_check[slot] = row;
    label_check[pr.K + slot] = row >= 0 ? it.y[row] : 0;
  } else {
    const int64_t p = slot - pr.K;
    const double dist = s * pr.inv_b;
    pair_dist[p] = dist;
    const double gap = pr.margin - dist;
    const bool active = gap > 0;
    contrib[slot] = active ? gap : 0.0;
    coef[p] = active && pr.lambda != 0.0 ? -pr.lambda * 2.0 * pr.inv_b : 0.0;
  }
}

// (3) The weighted terms, then the hinges, in index order (the CPU's order).
template <class T>
__global__ void finalize_kernel(Problem pr, const double* __restrict__ contrib,
                                double* __restrict__ diversity, double* __restrict__ total,
                                T* __restrict__ total_out) {
  double t = 0, div = 0;
  for (int64_t k = 0; k < pr.K; ++k) t += contrib[k];
  for (int64_t p = 0; p < pr.P; ++p) div += contrib[pr.K + p];
  t += pr.lambda * div;
  *diversity = div;
  *total = t;
  if (total_out) *total_out = static_cast<T>(t);
}

// (4) blockIdx.y: a term touched by the group's pairs; each of its elements adds the gradients of
// the active pairs in increasing order, so no two threads write one element.
template <class T>
__global__ void hinge_kernel(HingeGroup<T> group, const double* __restrict__ coef) {
  const HingeTerm<T>& t = group.term[blockIdx.y];
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < t.n;
       e += int64_t(gridDim.x) * blockDim.x) {
    T g = t.g[e];
    bool touched = false;
    for (int q = 0; q < group.num_pairs; ++q) {
      const HingePair<T>& pq = group.pair[q];
      const double c = coef[pq.index];
      if (c == 0.0 || (pq.i != t.k && pq.j != t.k)) continue;
      const T v = static_cast<T>(c) * (pq.zi[e] - pq.zj[e]);
      g = pq.i == t.k ? g + v : g - v;
      touched = true;
    }
    if (touched) t.g[e] = g;
  }
}

template <class T>
__global__ void scale_kernel(ItemGroup<T> group, const T* __restrict__ factor) {
  const Item<T>& it = group.item[blockIdx.y];
  const T f = *factor;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < it.C;
       e += int64_t(gridDim.x) * blockDim.x) {
    it.g[e] = it.x[e] * f;
  }
}

struct Layout {
  size_t rows = 0, contrib = 0, coef = 0, total = 0;
};

Layout layout(int64_t K, int64_t P, int64_t B) {
  Layout l;
  const size_t n = static_cast<size_t>(K + P);
  l.rows = 0;
  l.contrib = n * static_cast<size_t>(B) * sizeof(double);
  l.coef = l.contrib + n * sizeof(double);
  l.total = l.coef + static_cast<size_t>(std::max<int64_t>(P, 1)) * sizeof(double);
  return l;
}

}  // namespace

size_t joint_loss_workspace_bytes(int64_t num_terms, int64_t num_pairs, int64_t batch) {
  return layout(num_terms, num_pairs, batch).total;
}

template <class T>
void joint_loss(const JointLossArgs<T>& a, cudaStream_t stream) {
  const int64_t K = a.num_terms, B = a.batch, P = a.num_pairs;
  if (K == 0 || B == 0) return;
  const Layout l = layout(K, P, B);
  if (a.workspace_bytes < l.total) {
    throw Error("joint_loss (cuda): workspace of " + std::to_string(a.workspace_bytes) +
                " bytes, " + std::to_string(l.total) + " needed");
  }
  char* ws = static_cast<char*>(a.workspace);
  double* rows = reinterpret_cast<double*>(ws + l.rows);
  double* contrib = reinterpret_cast<double*>(ws + l.contrib);
  double* coef = reinterpret_cast<double*>(ws + l.coef);
  const bool want_grad = a.grads != nullptr;

  Problem pr;
  pr.K = K;
  pr.P = P;
  pr.B = B;
  pr.eps = a.label_smoothing;
  pr.inv_b = 1.0 / static_cast<double>(B);
  pr.margin = a.diversity_margin;
  pr.lambda = a.diversity_weight;

  std::vector<Item<T>> items(static_cast<size_t>(K + P));
  for (int64_t k = 0; k < K; ++k) {
    Item<T>& it = items[k];
    it.x = a.logits[k];
    it.g = want_grad ? a.grads[k] : nullptr;
    it.y = (a.coarse && a.coarse[k]) ? a.coarse_labels : a.labels;
    it.C = a.widths[k];
    it.weight = a.weights[k];
    it.scale = want_grad ? a.weights[k] * pr.inv_b : 0.0;
    it.slot = k;
  }
  for (int64_t p = 0; p < P; ++p) {
    Item<T>& it = items[K + p];
    it.x = a.logits[a.pair_i[p]];
    it.z = a.logits[a.pair_j[p]];
    it.C = a.widths[a.pair_i[p]];
    it.slot = K + p;
  }
  for (size_t first = 0; first < items.size(); first += kItemsPerLaunch) {
    ItemGroup<T> group;
    group.count = static_cast<int>(std::min<size_t>(kItemsPerLaunch, items.size() - first));
    for (int i = 0; i < group.count; ++i) group.item[i] = items[first + i];
    const int64_t warps = int64_t(group.count) * B;
    const unsigned blocks = grid_for(warps, kWarpsPerBlock);
    rows_kernel<T><<<blocks, kBlock, 0, stream>>>(group, pr, rows);
    MEL_CUDA_CHECK_LAUNCH();
    reduce_kernel<T><<<group.count, kBlock, 0, stream>>>(group, pr, rows, a.term_loss, a.pair_dist,
                                                         a.label_check, contrib, coef);
    MEL_CUDA_CHECK_LAUNCH();
  }
  finalize_kernel<T><<<1, 1, 0, stream>>>(pr, contrib, a.diversity, a.total, a.total_out);
  MEL_CUDA_CHECK_LAUNCH();

  if (!want_grad || P == 0 || a.diversity_weight == 0.0) return;
  for (int64_t first = 0; first < P; first += kHingePairsPerLaunch) {
    HingeGroup<T> group;
    group.num_pairs = static_cast<int>(std::min<int64_t>(kHingePairsPerLaunch, P - first));
    int64_t max_n = 0;
    for (int q = 0; q < group.num_pairs; ++q) {
      const int64_t p = first + q;
      const int64_t i = a.pair_i[p], j = a.pair_j[p];
      group.pair[q] = HingePair<T>{a.logits[i], a.logits[j], i, j, p};
      for (int64_t k : {i, j}) {
        bool seen = false;
        for (int t = 0; t < group.num_terms; ++t) seen = seen || group.term[t].k == k;
        if (seen) continue;
        group.term[group.num_terms++] = HingeTerm<T>{a.grads[k], B * a.widths[k], k};
        max_n = std::max(max_n, B * a.widths[k]);
      }
    }
    dim3 grid(grid_for(max_n), static_cast<unsigned>(group.num_terms));
    hinge_kernel<T><<<grid, kBlock, 0, stream>>>(group, coef);
    MEL_CUDA_CHECK_LAUNCH();
  }
}

template <class T>
void scale_by_device_scalar(T* const* dst, const T* const* src, const int64_t* numel, int64_t count,
                            const T* factor, cudaStream_t stream) {
  for (int64_t first = 0; first < count; first += kItemsPerLaunch) {
    ItemGroup<T> group;
    group.count = static_cast<int>(std::min<int64_t>(kItemsPerLaunch, count - first));
    int64_t max_n = 0;
    for (int i = 0; i < group.count; ++i) {
      group.item[i].x = src[first + i];
      group.item[i].g = dst[first + i];
      group.item[i].C = numel[first + i];  // the element count, in this kernel
      max_n = std::max(max_n, numel[first + i]);
    }
    if (max_n == 0) continue;
    dim3 grid(grid_for(max_n), static_cast<unsigned>(group.count));
    scale_kernel<T><<<grid, kBlock, 0, stream>>>(group, factor);
    MEL_CUDA_CHECK_LAUNCH();
  }
}

template void joint_loss<float>(const JointLossArgs<float>&, cudaStream_t);
template void joint_loss<double>(const JointLossArgs<double>&, cudaStream_t);
template void scale_by_device_scalar<float>(float* const*, const float* const*, const int64_t*,
                                            int64_t, const float*, cudaStream_t);
template void scale_by_device_scalar<double>(double* const*, const double* const*, const int64_t*,
                                             int64_t, const double*, cudaStream_t);

}  // namespace mel::kernels::cuda
