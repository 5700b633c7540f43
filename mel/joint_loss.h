// The MEL joint loss: weighted cross-entropy over every exit and combination head plus the pairwise
// diversity hinge, computed (with all logit gradients) by one fused kernel call.
#pragma once
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mel::method {

struct JointLossOptions {
  std::vector<double> weights;    // w_k, one per term (0 keeps the term reported, gradient 0)
  std::vector<bool> coarse;       // per term: scored against the coarse labels (empty = all fine)
  double label_smoothing = 0.0;   // PyTorch's eps, in [0, 1]
  double diversity_weight = 0.0;  // lambda_div (0 = off)
  double diversity_margin = 0.0;
  std::vector<std::pair<int, int>> diversity_pairs;  // term indices, equal widths
};

struct JointLossResult {
  Tensor total;               // 0-d, differentiable w.r.t. every logits tensor
  std::vector<double> terms;  // CE_k (unweighted, mean over the batch), one per term
  double diversity = 0.0;     // the hinge sum before lambda_div
  // The total again, on the host (it comes back with the terms; reading it here instead of
  // total.item() saves a GPU synchronisation).
  double total_value = 0.0;
};

// L = sum_k w_k CE_k + lambda_div sum_{(i, j)} max(0, margin - (1/B) sum_b ||z_i(b) - z_j(b)||^2).
// logits: K tensors [B, C_k] of one floating dtype (any strides); labels and coarse_labels: [B]
// i64 (or i32) class indices; coarse_labels may be undefined when no term is coarse. Forward and
// backward together are one kernel call: the gradients are computed with the loss and saved, and
// backward only scales them by the incoming gradient.
JointLossResult joint_loss(const std::vector<Tensor>& logits, const Tensor& labels,
                           const Tensor& coarse_labels, const JointLossOptions& options);

// The same loss composed from primitive ops (cross_entropy, sub, mul, sum, relu ...): the
// reference the fused version is tested against.
Tensor joint_loss_reference(const std::vector<Tensor>& logits, const Tensor& labels,
                            const Tensor& coarse_labels, const JointLossOptions& options);

}  // namespace mel::method
