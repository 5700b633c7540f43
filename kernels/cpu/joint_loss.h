// CPU kernel of the fused MEL joint loss: the label-smoothed cross-entropy of every exit and head,
// the pairwise diversity hinge and the gradient of the total with respect to every logits tensor.
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// One joint-loss problem over K terms sharing a batch of B rows. Term k has contiguous logits
// [B, widths[k]] scored against labels (fine) or coarse_labels (coarse[k] != 0); every label must
// already lie in [0, widths[k]) (the caller checks on the host). Pair p joins terms pair_i[p] and
// pair_j[p], which must have equal widths.
template <class T>
struct JointLossArgs {
  int64_t num_terms = 0;  // K
  int64_t batch = 0;      // B >= 1
  const T* const* logits = nullptr;
  const int64_t* widths = nullptr;
  const double* weights = nullptr;  // w_k; 0 still reports the term's loss
  const uint8_t* coarse = nullptr;  // null: every term uses the fine labels
  const int64_t* labels = nullptr;
  const int64_t* coarse_labels = nullptr;  // null when no term is coarse
  double label_smoothing = 0.0;            // PyTorch's eps
  int64_t num_pairs = 0;
  const int64_t* pair_i = nullptr;
  const int64_t* pair_j = nullptr;
  double diversity_weight = 0.0;  // lambda_div
  double diversity_margin = 0.0;

  // ---- outputs ----
  // d total / d logits[k], contiguous [B, widths[k]], fully overwritten; null (the array itself)
  // when no gradient is wanted, which also skips the hinge's gradient pass.
  T* const* grads = nullptr;
  double* term_loss = nullptr;  // [K]: mean over the batch of term k's cross-entropy
  double* pair_dist = nullptr;  // [P]: (1/B) sum_b ||z_i(b) - z_j(b)||^2
  double* diversity = nullptr;  // sum_p max(0, margin - pair_dist[p])
  double* total = nullptr;      // sum_k w_k term_loss[k] + lambda_div * diversity
};

// Everything in one call (one OpenMP parallel region when the batch is large enough): each row's
// terms and pair distances and the cross-entropy gradients (w_k / B) (softmax - target), then,
// after the batch sums are known, the hinge gradient -/+ lambda_div 2/B (z_i - z_j) of every
// active pair. Batch sums are taken over a fixed partition of the rows in a fixed order, so the
// results are bitwise reproducible whatever the thread count.
template <class T>
void joint_loss(const JointLossArgs<T>& args);

}  // namespace mel::kernels::cpu
