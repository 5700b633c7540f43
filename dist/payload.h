// Internal helpers of the CPU backends: tensors as bytes, checks of what arrived, and collectives
// assembled from every rank's bytes in rank order (so in-process and MPI agree bitwise).
#pragma once
#include <cstdint>
#include <vector>

#include "dist/communicator.h"

namespace mel::dist {

using Bytes = std::vector<uint8_t>;

// The bytes of `t` (copied contiguous) and back into a contiguous `t` of the same byte size.
Bytes to_bytes(const Tensor& t);
void from_bytes(const Bytes& bytes, Tensor& t);

// Errors naming the rank, the operation and both tensors when what arrived does not fit `t`.
void check_match(const char* op, int src, DType dtype, const Shape& shape, const Tensor& t);
void check_bytes(size_t bytes, const Tensor& t, int rank, const char* op);

// t = sum of every rank's bytes (each a tensor like t), added in rank order.
void reduce_gathered(const Communicator& comm, const std::vector<Bytes>& all, Tensor& t);
// [size, ...t.shape] from every rank's bytes.
Tensor stack_gathered(const std::vector<Bytes>& all, const Tensor& like);

Bytes encode_ints(const std::vector<int64_t>& values);
std::vector<int64_t> decode_ints(const Bytes& bytes);

// From every rank's encoded (color, key): this rank's group size and rank within it.
struct SplitGroup {
  int size = 0, rank = 0;
};
SplitGroup split_group(const std::vector<Bytes>& all, int rank, int color);

}  // namespace mel::dist
