#include "core/storage.h"

#include <algorithm>
#include <cstdlib>

#include "core/cuda_context.h"
#include "core/error.h"

namespace mel {

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUseCache = false;
#else
constexpr bool kUseCache = true;
#endif

void* system_alloc(size_t bytes) {
  void* p = std::aligned_alloc(CpuAllocator::kAlignment, bytes);
  if (!p) fail("CpuAllocator: out of memory allocating {} bytes", bytes);
  return p;
}

}  // namespace

size_t CpuAllocator::block_size(size_t nbytes) {
  size_t aligned = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  if (!kUseCache || aligned < kCacheMinBytes) return aligned;
  // four classes per power of two: waste below 25%
  size_t top = size_t(1) << (63 - __builtin_clzll(aligned));
  size_t step = top / 4;
  return (aligned + step - 1) / step * step;
}

void* CpuAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t bytes = block_size(nbytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.allocations;
    if (bytes >= kCacheMinBytes) {
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= bytes;
        ++stats_.cache_hits;
      }
    }
    if (!p) stats_.reserved_bytes += bytes;
    stats_.live_bytes += nbytes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.live_bytes);
  }
  if (!p) {
    try {
      p = system_alloc(bytes);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.reserved_bytes -= bytes;
      stats_.live_bytes -= nbytes;
      throw;
    }
  }
  return p;
}

void CpuAllocator::deallocate(void* p, size_t nbytes) {
  if (!p) return;
  const size_t bytes = block_size(nbytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.live_bytes -= nbytes;
    if (kUseCache && bytes >= kCacheMinBytes && stats_.cached_bytes + bytes <= kCacheMaxBytes) {
      free_[bytes].push_back(p);
      stats_.cached_bytes += bytes;
      return;
    }
    stats_.reserved_bytes -= bytes;
  }
  std::free(p);
}

AllocatorStats CpuAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CpuAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes = stats_.live_bytes;
}

void CpuAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [bytes, blocks] : free_) {
    for (void* p : blocks) std::free(p);
    stats_.reserved_bytes -= bytes * blocks.size();
    stats_.cached_bytes -= bytes * blocks.size();
  }
  free_.clear();
}

CpuAllocator& cpu_allocator() {
  // The CPU's part of the per-device context; never destroyed, so tensors released during static
  // destruction still find it.
  static CpuAllocator* alloc = new CpuAllocator;
  return *alloc;
}

Allocator& allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
  check_device_available(d);
  MEL_CUDA_ONLY(return cuda_context(d.index).allocator());
}

Storage::Storage(size_t nbytes, Allocator& alloc)
    : data_(alloc.allocate(nbytes)), nbytes_(nbytes), alloc_(&alloc) {}

Storage::~Storage() {
  alloc_->deallocate(data_, nbytes_);
}

}  // namespace mel
