// CUDA kernel of the fused MEL joint loss, the twin of kernels/cpu/joint_loss.h: every term's
// label-smoothed cross-entropy, the pairwise diversity hinge and all logit gradients, on a stream.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace mel::kernels::cuda {

// The CPU problem description (see kernels/cpu/joint_loss.h for the meaning of every field), with
// the same fields. Host memory: the arrays `logits`, `grads`, `widths`, `weights`, `coarse`,
// `pair_i`, `pair_j` (the pointers inside logits / grads point to device memory). Device memory:
// the labels and every output. Unlike the CPU kernel, labels need not be checked beforehand: the
// kernel reports the first out-of-range label of every term in `label_check` (and never reads
// through it), so that the caller reads the check back with the losses in one copy.
template <class T>
struct JointLossArgs {
  int64_t num_terms = 0;  // K
  int64_t batch = 0;      // B >= 1
  const T* const* logits = nullptr;
  const int64_t* widths = nullptr;
  const double* weights = nullptr;
  const uint8_t* coarse = nullptr;
  const int64_t* labels = nullptr;
  const int64_t* coarse_labels = nullptr;
  double label_smoothing = 0.0;
  int64_t num_pairs = 0;
  const int64_t* pair_i = nullptr;
  const int64_t* pair_j = nullptr;
  double diversity_weight = 0.0;
  double diversity_margin = 0.0;

  // ---- outputs (device) ----
  T* const* grads = nullptr;    // null (the host array itself): no gradients
  double* term_loss = nullptr;  // [K]
  double* pair_dist = nullptr;  // [P]
  double* diversity = nullptr;  // [1]
  double* total = nullptr;      // [1]
  T* total_out = nullptr;       // optional: the total again, as a T (the op's 0-d result)
  // [2K]: label_check[k] = first row whose label is outside [0, widths[k]) (-1: none) and
  // label_check[K + k] = that label (0 when none).
  int64_t* label_check = nullptr;

  // Scratch of joint_loss_workspace_bytes(K, P, B) bytes, device memory.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

size_t joint_loss_workspace_bytes(int64_t num_terms, int64_t num_pairs, int64_t batch);

// A few launches, no synchronisation: (1) one warp per (term or pair, row) computes the row's
// cross-entropy (or squared distance) and the term's gradient w_k / B (softmax - target) into
// row slots; (2) one block per term or pair adds its rows in a fixed order and checks its labels;
// (3) one thread adds the weighted terms and the hinges in the CPU's order; (4) when gradients are
// wanted and diversity_weight != 0, the hinge gradients of the active pairs are added term by
// term, pairs in increasing order. Every sum has a fixed association: the results are bitwise
// reproducible on a device (they differ from the CPU's in the last bits: another exp, another
// association of the batch sums).
template <class T>
void joint_loss(const JointLossArgs<T>& args, cudaStream_t stream);

// dst[k][i] = src[k][i] * *factor for i < numel[k], k < count (the backward pass's scaling by the
// incoming gradient, read on the device). dst, src, numel: host arrays; factor: device memory.
template <class T>
void scale_by_device_scalar(T* const* dst, const T* const* src, const int64_t* numel, int64_t count,
                            const T* factor, cudaStream_t stream);

}  // namespace mel::kernels::cuda
