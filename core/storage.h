// Storage: a reference-counted block of device memory from an Allocator. The CPU allocator returns
// 64-byte-aligned blocks and keeps live/peak byte counts.
#pragma once
#include <atomic>
#include <cstddef>
#include <memory>

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
  size_t live_bytes = 0;
  size_t peak_bytes = 0;
  size_t allocations = 0;
};

class CpuAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;
  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }
  AllocatorStats stats() const;
  void reset_peak();

 private:
  std::atomic<size_t> live_{0}, peak_{0}, count_{0};
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

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Allocator* alloc_;
};

}  // namespace mel
