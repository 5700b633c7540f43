// CUDA kernel of the fused MEL joint loss, the twin of kernels/cpu/joint_loss.h: every term's
// label-smoothed cross-entropy, the pairwise diversity hinge and all logit gradients, on a stream.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/joint_loss_args.h"

namespace mel::kernels::cuda {

// The problem description both backends share (kernels/joint_loss_args.h).
using kernels::JointLossArgs;

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
