// CPU kernel of the fused MEL joint loss: the label-smoothed cross-entropy of every exit and head,
// the pairwise diversity hinge and the gradient of the total with respect to every logits tensor.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/joint_loss_args.h"

namespace mel::kernels::cpu {

using kernels::JointLossArgs;

// Scratch the kernel needs (none on the CPU; the CUDA twin needs some).
inline size_t joint_loss_workspace_bytes(int64_t, int64_t, int64_t) {
  return 0;
}

// Everything in one call (one OpenMP parallel region when the batch is large enough): each row's
// terms and pair distances and the cross-entropy gradients (w_k / B) (softmax - target), then,
// after the batch sums are known, the hinge gradient -/+ lambda_div 2/B (z_i - z_j) of every
// active pair. Batch sums are taken over a fixed partition of the rows in a fixed order, so the
// results are bitwise reproducible whatever the thread count.
template <class T>
void joint_loss(const JointLossArgs<T>& args);

// dst[k][i] = src[k][i] * *factor for i < numel[k], k < count (the backward pass's scaling by the
// incoming gradient). dst, src, numel: host arrays.
template <class T>
void scale_by_device_scalar(T* const* dst, const T* const* src, const int64_t* numel, int64_t count,
                            const T* factor);

}  // namespace mel::kernels::cpu
