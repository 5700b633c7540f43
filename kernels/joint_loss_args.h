// The fused MEL joint loss as one problem description shared by the CPU kernel and its CUDA twin:
// K terms (exits and heads) of logits over one batch, their labels, weights and diversity pairs.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mel::kernels {

// One joint-loss problem over K terms sharing a batch of B rows. Term k has contiguous logits
// [B, widths[k]] scored against labels (fine) or coarse_labels (coarse[k] != 0). Pair p joins
// terms pair_i[p] and pair_j[p], which must have equal widths.
//
// Host memory: the arrays `logits`, `grads`, `widths`, `weights`, `coarse`, `pair_i`, `pair_j`
// (the pointers inside logits / grads point to the kernel's memory: host for the CPU kernel,
// device for the CUDA one). The kernel's memory: the labels and every output. Labels need not be
// checked beforehand: the kernel reports the first out-of-range label of every term in
// `label_check` and never reads through it (the outputs are then unspecified), so a GPU caller
// reads the check back with the losses in one copy.
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
  T* total_out = nullptr;       // optional: the total again, as a T (the op's 0-d result)
  // [2K]: label_check[k] = first row whose label is outside [0, widths[k]) (-1: none) and
  // label_check[K + k] = that label (0 when none).
  int64_t* label_check = nullptr;

  // Scratch of joint_loss_workspace_bytes(K, P, B) bytes (none on the CPU).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

}  // namespace mel::kernels
