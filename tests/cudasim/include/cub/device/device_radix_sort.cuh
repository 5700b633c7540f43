// The simulator's cub::DeviceRadixSort: the one CUB algorithm kernels/cuda uses (index_add sorts
// its keys), run on the host with the same contract: a first call with no temporary storage asks
// for its size, a second sorts (key, value) pairs stably by bits [begin_bit, end_bit) of the key.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "cudasim/sim.h"

namespace cudasim {
// Host code of the simulator may read and write device memory inside this scope (copies, memset,
// the host sort); the ranges are checked against live allocations first. Leaving it restores the
// protection it found.
struct DeviceAccess {
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;

 private:
  bool was_open_ = false;
};
void check_device_range(const void* p, size_t bytes, const char* what);
}  // namespace cudasim

namespace cub {
struct DeviceRadixSort {
  template <class K, class V, class N>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out,
                               const V* values_in, V* values_out, N n, int begin_bit = 0,
                               int end_bit = int(sizeof(K) * 8), cudaStream_t = nullptr) {
    if (temp == nullptr) {
      temp_bytes = 16;
      return cudaSuccess;
    }
    const size_t count = static_cast<size_t>(n);
    cudasim::check_device_range(temp, temp_bytes, "SortPairs temporary storage");
    cudasim::check_device_range(keys_in, count * sizeof(K), "SortPairs keys_in");
    cudasim::check_device_range(keys_out, count * sizeof(K), "SortPairs keys_out");
    cudasim::check_device_range(values_in, count * sizeof(V), "SortPairs values_in");
    cudasim::check_device_range(values_out, count * sizeof(V), "SortPairs values_out");
    cudasim::DeviceAccess access;
    const int bits = end_bit - begin_bit;
    const uint64_t mask = bits >= 64 ? ~uint64_t(0) : ((uint64_t(1) << bits) - 1);
    auto key_of = [&](size_t i) { return (static_cast<uint64_t>(keys_in[i]) >> begin_bit) & mask; };
    std::vector<size_t> order(count);
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return key_of(a) < key_of(b); });
    std::vector<K> k(count);
    std::vector<V> v(count);
    for (size_t i = 0; i < count; ++i) {
      k[i] = keys_in[order[i]];
      v[i] = values_in[order[i]];
    }
    std::copy(k.begin(), k.end(), keys_out);
    std::copy(v.begin(), v.end(), values_out);
    return cudaSuccess;
  }
};
}  // namespace cub
