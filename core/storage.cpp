#include "core/storage.h"

#include <cstdlib>

#include "core/error.h"

namespace mel {

void* CpuAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (!p) fail("CpuAllocator: out of memory allocating {} bytes", nbytes);
  size_t live = live_.fetch_add(nbytes) + nbytes;
  size_t peak = peak_.load();
  while (live > peak && !peak_.compare_exchange_weak(peak, live)) {
  }
  count_.fetch_add(1);
  return p;
}

void CpuAllocator::deallocate(void* p, size_t nbytes) {
  if (!p) return;
  std::free(p);
  live_.fetch_sub(nbytes);
}

AllocatorStats CpuAllocator::stats() const {
  return {live_.load(), peak_.load(), count_.load()};
}

void CpuAllocator::reset_peak() {
  peak_.store(live_.load());
}

CpuAllocator& cpu_allocator() {
  static CpuAllocator alloc;  // the CPU's part of the per-device context
  return alloc;
}

Allocator& allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
  check_device_available(d);
  fail(
      "device {}: CUDA tensors are not implemented in this build yet (the CUDA backend adds "
      "the caching allocator)",
      d.str());
}

Storage::Storage(size_t nbytes, Allocator& alloc)
    : data_(alloc.allocate(nbytes)), nbytes_(nbytes), alloc_(&alloc) {}

Storage::~Storage() {
  alloc_->deallocate(data_, nbytes_);
}

}  // namespace mel
