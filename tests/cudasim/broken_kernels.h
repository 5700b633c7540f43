// Kernels for the simulator's self-test (test_selftest.cpp): each bug the simulator must catch,
// planted in a small kernel, beside the correct version it must pass. Pointers are device memory.
#pragma once

namespace cudasim_selftest {

// out[w] = sum of x over warp w. Correct with a block of 64 threads; a block of 48 leaves the
// second warp partial, and its full-mask shuffles name lanes that do not exist.
void warp_sums(const float* x, float* out, int n, int block);
// Only lanes 0..15 of each warp call the full-mask warp sum: a partial-warp shuffle.
void warp_sum_in_branch(const float* x, float* out, int n);
// out[0] = sum of x[0..n) through shared memory with one block of `block` threads. Bugs:
// early_exit (threads t >= n return before the barrier), !barrier (no __syncthreads between the
// writes and thread 0's reads).
void block_sum(const float* x, float* out, int n, int block, bool early_exit, bool barrier);
// y[i] = x[i] for i < n - drop + overrun, grid-stride (drop: the tail element is never written;
// overrun: reads and writes past the end).
void copy(const float* x, float* y, int n, int drop, int overrun);
// float4 copy of n4 vectors from x + offset (offset 1: misaligned loads).
void copy4(const float* x, float* y, int n4, int offset);
// y[t] = s[t + 1] after s[t] = x[t] (the last thread reads a shared element nobody wrote) or,
// correct, s[(t + 1) % 32]. One block of 32 threads.
void rotate(const float* x, float* y, bool wrap);
// s[t + 64] of a 64-element shared array: out of bounds.
void shared_overflow(const float* x, float* y);

}  // namespace cudasim_selftest
