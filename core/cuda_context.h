// The per-GPU context (stream, cuBLASLt and cuDNN handles, workspaces, caching allocator, pinned
// staging buffers) and the backend switch ops use to call a CUDA kernel or report a CPU-only build.
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/storage.h"

#ifdef MEL_HAVE_CUDA
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
// Expands to its arguments in a CUDA build; elsewhere to a clear error (no CUDA tensor can exist
// there, so the branch is only reached through a bug).
#define MEL_CUDA_ONLY(...) __VA_ARGS__
#else
#define MEL_CUDA_ONLY(...) ::mel::fail_without_cuda(__func__)
#endif

namespace mel {

[[noreturn]] void fail_without_cuda(const char* where);

// Device memory statistics and cache control, on every build (CPU: the CPU allocator's).
AllocatorStats memory_stats(Device d);
void reset_peak_memory(Device d);
void empty_cache(Device d);
// Waits for all work queued on the device (no-op on the CPU).
void synchronize(Device d);
// The device context's growable scratch of at least `bytes` (a GPU's; null on the CPU, whose
// kernels need none), valid until the next call on that device.
void* context_workspace(Device d, size_t bytes);
// True while the device's stream is being captured into a CUDA graph (never on the CPU): nothing
// may be read back then.
bool is_capturing(Device d);
// TF32 tensor-core math for f32 matmuls and convolutions on the GPU (off by default: results then
// match the CPU to f32 rounding; on, to about 1e-3 relative).
void set_allow_tf32(bool on);
bool allow_tf32();
// The size class the CUDA caching allocator reserves for a request of nbytes.
size_t cuda_block_size(size_t nbytes);

#ifdef MEL_HAVE_CUDA

// Caching allocator for one device. Requests are rounded to a size class (512-byte granularity
// below 1 MiB, then four classes per power of two); freed blocks go to a free list keyed by
// (stream, size class) and are reused by later requests on the same stream without any
// synchronisation, because the stream orders the old and the new use. cudaMalloc runs only when
// the cache has no block of the class; when it fails, the cache is released and the call retried
// once, then a mel::Error reports the requested, free and reserved bytes.
class CudaAllocator final : public Allocator {
 public:
  CudaAllocator(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~CudaAllocator() override;
  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) override;
  Device device() const override { return Device::cuda(device_); }
  AllocatorStats stats() const;
  void reset_peak();
  void empty_cache();  // synchronises the device, then returns every cached block
  static size_t block_size(size_t nbytes) { return cuda_block_size(nbytes); }

 private:
  void release_cached_locked();
  int device_;
  cudaStream_t stream_;
  mutable std::mutex mu_;
  std::unordered_map<void*, cudaStream_t> stream_of_;  // live blocks -> stream they belong to
  struct Key {
    cudaStream_t stream;
    size_t bytes;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<size_t>()(k.bytes) ^ (std::hash<void*>()(k.stream) << 1);
    }
  };
  std::unordered_map<Key, std::vector<void*>, KeyHash> free_;
  AllocatorStats stats_;
};

// Everything one GPU needs. Created on first use and kept for the life of the process (tensors
// freed during static destruction still find their allocator).
class CudaContext {
 public:
  explicit CudaContext(int device);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  // The compute stream every op of this device is queued on.
  cudaStream_t stream() const { return stream_; }
  CudaAllocator& allocator() { return *allocator_; }
  cublasLtHandle_t cublaslt() const { return lt_; }
  void* cublaslt_workspace() const { return lt_workspace_; }
  size_t cublaslt_workspace_bytes() const { return kLtWorkspaceBytes; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  // Scratch device memory of at least `bytes`, valid for work queued on stream() until the next
  // call. Grows by reallocating through the caching allocator (rare: shapes repeat).
  void* workspace(size_t bytes);
  // A per-context slot for a kernel family's cache (e.g. cuDNN algorithm choices per shape).
  template <class T>
  T& cache(const char* key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = caches_[key];
    if (!slot) slot = std::make_shared<T>();
    return *static_cast<T*>(slot.get());
  }

  // Host -> device through pinned staging: returns once `src` has been copied to the staging
  // buffer, the transfer itself runs asynchronously on stream().
  void copy_to_device(void* dst, const void* src, size_t nbytes);
  // Device -> host: waits for the stream (this is where a value is read back).
  void copy_to_host(void* dst, const void* src, size_t nbytes);
  void synchronize();

  static constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;

 private:
  struct Pinned {
    void* ptr = nullptr;
    size_t bytes = 0;
    cudaEvent_t done = nullptr;  // recorded after the transfer that last read this buffer
  };
  void ensure_pinned(Pinned& p, size_t bytes);

  int device_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CudaAllocator> allocator_;
  cublasLtHandle_t lt_ = nullptr;
  void* lt_workspace_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<void>> caches_;
  Pinned upload_[2];
  int next_upload_ = 0;
  Pinned download_;
};

// The context of cuda:index (checked with check_device_available on first use).
CudaContext& cuda_context(int index);
// The compute stream of a CUDA device, with that device made current for the calling thread.
cudaStream_t cuda_stream(Device d);

#endif  // MEL_HAVE_CUDA

}  // namespace mel
