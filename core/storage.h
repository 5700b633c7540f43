// Storage: a reference-counted block of device memory from an Allocator. The CPU allocator returns
// 64-byte-aligned blocks, caches large freed blocks for reuse and keeps byte statistics.
#pragma once
#include <atomic>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "core/device.h"

namespace mel {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
  virtual Device device() const = 0;
};

struct AllocatorStats {
  size_t live_bytes = 0;      // requested bytes of blocks in use
  size_t peak_bytes = 0;      // maximum of live_bytes since start or reset_peak()
  size_t reserved_bytes = 0;  // bytes held from the system: blocks in use plus the cache
  size_t cached_bytes = 0;    // freed blocks kept for reuse
  size_t allocations = 0;     // allocate() calls
  size_t cache_hits = 0;      // of which served from the cache
};

// Blocks of at least kCacheMinBytes are rounded up to a size class (four classes per power of
// two) and kept on a free list when released, so the tensors of a training step reuse memory
// instead of mapping fresh pages (and taking their page faults) every step. Smaller blocks go
// straight to the C allocator, which already recycles them. AddressSanitizer builds bypass the
// cache so that use-after-free stays detectable.
class CpuAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;
  static constexpr size_t kCacheMinBytes = size_t(64) << 10;
  static constexpr size_t kCacheMaxBytes = size_t(2) << 30;  // beyond this, freed blocks go back

  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }
  AllocatorStats stats() const;
  void reset_peak();
  // Returns every cached block to the system.
  void empty_cache();
  // The size actually reserved for a request of nbytes.
  static size_t block_size(size_t nbytes);

 private:
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  AllocatorStats stats_;
};

CpuAllocator& cpu_allocator();
// The allocator of a device; throws a clear mel::Error when the device is unavailable.
Allocator& allocator_for(Device d);

class Storage {
 public:
  Storage(size_t nbytes, Allocator& alloc);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return alloc_->device(); }

  // Bumped by every in-place write through the tensor API (fill_, copy_, set), so autograd can
  // tell that a tensor saved for backward was overwritten.
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> version_{0};
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Allocator* alloc_;
};

}  // namespace mel
