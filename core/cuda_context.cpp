#include "core/cuda_context.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#include "core/error.h"

#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/check.h"
#endif

namespace mel {

namespace {
std::atomic<bool> g_allow_tf32{false};
}  // namespace

void fail_without_cuda(const char* where) {
  fail("{}: reached a CUDA code path in a build without the CUDA backend", where);
}

void set_allow_tf32(bool on) {
  g_allow_tf32.store(on);
}
bool allow_tf32() {
  return g_allow_tf32.load();
}

size_t cuda_block_size(size_t nbytes) {
  constexpr size_t kSmall = 512, kLarge = size_t(1) << 20;
  size_t aligned = (nbytes + kSmall - 1) / kSmall * kSmall;
  if (aligned < kLarge) return aligned;
  size_t top = size_t(1) << (63 - __builtin_clzll(aligned));
  size_t step = top / 4;
  return (aligned + step - 1) / step * step;
}

AllocatorStats memory_stats(Device d) {
  if (d.is_cpu()) return cpu_allocator().stats();
  MEL_CUDA_ONLY(return cuda_context(d.index).allocator().stats());
}

void reset_peak_memory(Device d) {
  if (d.is_cpu()) return cpu_allocator().reset_peak();
  MEL_CUDA_ONLY(cuda_context(d.index).allocator().reset_peak());
}

void empty_cache(Device d) {
  if (d.is_cpu()) return cpu_allocator().empty_cache();
  MEL_CUDA_ONLY(cuda_context(d.index).allocator().empty_cache());
}

void synchronize(Device d) {
  if (d.is_cpu()) return;
  MEL_CUDA_ONLY(cuda_context(d.index).synchronize());
}

void* context_workspace(Device d, size_t bytes) {
  if (d.is_cpu() || bytes == 0) return nullptr;
#ifdef MEL_HAVE_CUDA
  return cuda_context(d.index).workspace(bytes);
#else
  fail_without_cuda("context_workspace");
#endif
}

bool is_capturing(Device d) {
  if (d.is_cpu()) return false;
#ifdef MEL_HAVE_CUDA
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  MEL_CUDA_CHECK(cudaStreamIsCapturing(cuda_stream(d), &capture));
  return capture != cudaStreamCaptureStatusNone;
#else
  fail_without_cuda("is_capturing");
#endif
}

#ifdef MEL_HAVE_CUDA

namespace {

// Makes `device` current for this thread; cheap when it already is.
void set_device(int device) {
  thread_local int current = -1;
  if (current != device) {
    MEL_CUDA_CHECK(cudaSetDevice(device));
    current = device;
  }
}

std::string mib(size_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace

// ---- caching allocator ---------------------------------------------------------------------

CudaAllocator::~CudaAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

#ifdef MEL_CUDA_SIM
// On the kernel simulator every tensor gets an allocation of exactly its size, followed by a guard
// page, and is freed at once (no cache): an access past its end or after its release faults there.
constexpr bool kExactBlocks = true;
#else
constexpr bool kExactBlocks = false;
#endif

void* CudaAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t bytes = kExactBlocks ? nbytes : block_size(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.allocations;
  void* p = nullptr;
  auto it = free_.find(Key{stream_, bytes});
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    stats_.cached_bytes -= bytes;
    ++stats_.cache_hits;
  } else {
    set_device(device_);
    cudaError_t st = cudaMalloc(&p, bytes);
    if (st == cudaErrorMemoryAllocation && stats_.cached_bytes > 0) {
      cudaGetLastError();
      release_cached_locked();
      st = cudaMalloc(&p, bytes);
    }
    if (st != cudaSuccess) {
      cudaGetLastError();  // clear the error so later calls do not see it
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail(
          "cuda:{}: out of memory: requested {} bytes ({}), {} free of {} on the device, {} "
          "reserved by mel's caching allocator ({} in live tensors); {}",
          device_, nbytes, mib(bytes), mib(free_b), mib(total_b), mib(stats_.reserved_bytes),
          mib(stats_.live_bytes), cudaGetErrorString(st));
    }
    stats_.reserved_bytes += bytes;
  }
  stream_of_[p] = stream_;
  stats_.live_bytes += nbytes;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.live_bytes);
  return p;
}

void CudaAllocator::deallocate(void* p, size_t nbytes) {
  if (!p) return;
  const size_t bytes = kExactBlocks ? nbytes : block_size(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = stream_of_.find(p);
  cudaStream_t s = it != stream_of_.end() ? it->second : stream_;
  if (it != stream_of_.end()) stream_of_.erase(it);
  stats_.live_bytes -= nbytes;
  if (kExactBlocks) {
    MEL_CUDA_CHECK(cudaFree(p));
    stats_.reserved_bytes -= bytes;
    return;
  }
  free_[Key{s, bytes}].push_back(p);
  stats_.cached_bytes += bytes;
}

void CudaAllocator::release_cached_locked() {
  if (stats_.cached_bytes == 0) return;
  set_device(device_);
  cudaDeviceSynchronize();  // cached blocks may still be read by queued kernels
  for (auto& [key, blocks] : free_) {
    for (void* p : blocks) cudaFree(p);
    stats_.reserved_bytes -= key.bytes * blocks.size();
    stats_.cached_bytes -= key.bytes * blocks.size();
  }
  free_.clear();
}

AllocatorStats CudaAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CudaAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes = stats_.live_bytes;
}

void CudaAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

// ---- context -------------------------------------------------------------------------------

CudaContext::CudaContext(int device) : device_(device) {
  set_device(device);
  MEL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  allocator_ = std::make_unique<CudaAllocator>(device, stream_);
  MEL_CUBLAS_CHECK(cublasLtCreate(&lt_));
  MEL_CUDA_CHECK(cudaMalloc(&lt_workspace_, kLtWorkspaceBytes));
  MEL_CUDNN_CHECK(cudnnCreate(&cudnn_));
  MEL_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
  for (Pinned& p : upload_)
    MEL_CUDA_CHECK(cudaEventCreateWithFlags(&p.done, cudaEventDisableTiming));
  MEL_CUDA_CHECK(cudaEventCreateWithFlags(&download_.done, cudaEventDisableTiming));
}

CudaContext::~CudaContext() {
  set_device(device_);
  cudaStreamSynchronize(stream_);
  if (workspace_) allocator_->deallocate(workspace_, workspace_bytes_);
  allocator_.reset();
  for (Pinned* p : {&upload_[0], &upload_[1], &download_}) {
    if (p->ptr) cudaFreeHost(p->ptr);
    if (p->done) cudaEventDestroy(p->done);
  }
  if (cudnn_) cudnnDestroy(cudnn_);
  if (lt_workspace_) cudaFree(lt_workspace_);
  if (lt_) cublasLtDestroy(lt_);
  if (stream_) cudaStreamDestroy(stream_);
}

void* CudaContext::workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return workspace_;
  if (workspace_) allocator_->deallocate(workspace_, workspace_bytes_);  // stream-ordered reuse
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  workspace_ = allocator_->allocate(bytes);
  workspace_bytes_ = bytes;
  return workspace_;
}

void CudaContext::ensure_pinned(Pinned& p, size_t bytes) {
  if (p.bytes >= bytes) return;
  if (p.ptr) MEL_CUDA_CHECK(cudaFreeHost(p.ptr));
  p.ptr = nullptr;
  p.bytes = 0;
  size_t want = std::max(bytes, size_t(1) << 20);
  cudaError_t st = cudaHostAlloc(&p.ptr, want, cudaHostAllocDefault);
  if (st != cudaSuccess) {
    cudaGetLastError();
    fail("cuda:{}: cannot allocate {} of pinned host memory for transfers: {}", device_, mib(want),
         cudaGetErrorString(st));
  }
  p.bytes = want;
}

void CudaContext::copy_to_device(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  set_device(device_);
  Pinned& p = upload_[next_upload_];
  next_upload_ ^= 1;
  // The transfer that last read this staging buffer must be done before it is overwritten; the
  // other buffer's transfer may still be running, which is what lets copies overlap compute.
  MEL_CUDA_CHECK(cudaEventSynchronize(p.done));
  ensure_pinned(p, nbytes);
  std::memcpy(p.ptr, src, nbytes);
  MEL_CUDA_CHECK(cudaMemcpyAsync(dst, p.ptr, nbytes, cudaMemcpyHostToDevice, stream_));
  MEL_CUDA_CHECK(cudaEventRecord(p.done, stream_));
}

void CudaContext::copy_to_host(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  set_device(device_);
  ensure_pinned(download_, nbytes);
  MEL_CUDA_CHECK(cudaMemcpyAsync(download_.ptr, src, nbytes, cudaMemcpyDeviceToHost, stream_));
  MEL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::memcpy(dst, download_.ptr, nbytes);
}

void CudaContext::synchronize() {
  set_device(device_);
  MEL_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaContext& cuda_context(int index) {
  // Looked up on every GPU op: the fast path is one atomic load, creation takes the lock.
  static std::mutex mu;
  static std::array<std::atomic<CudaContext*>, 64> contexts{};
  MEL_CHECK(index >= 0 && index < static_cast<int>(contexts.size()),
            "cuda:{}: device ordinal out of range", index);
  if (CudaContext* c = contexts[index].load(std::memory_order_acquire)) return *c;
  std::lock_guard<std::mutex> lock(mu);
  if (!contexts[index].load(std::memory_order_relaxed)) {
    check_device_available(Device::cuda(index));
    // never destroyed, see the header
    contexts[index].store(new CudaContext(index), std::memory_order_release);
  }
  return *contexts[index].load(std::memory_order_relaxed);
}

cudaStream_t cuda_stream(Device d) {
  CudaContext& ctx = cuda_context(d.index);
  set_device(d.index);
  return ctx.stream();
}

#endif  // MEL_HAVE_CUDA

}  // namespace mel
