// Helpers of the GPU kernel benchmarks: skip without a GPU, time a callable with CUDA events after
// warm-up (reported as manual time), flush L2 between runs, and the device's peak memory bandwidth
// so results can be given as a fraction of it.
#pragma once
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <string>

#include "core/cuda_context.h"
#include "core/mel.h"
#include "kernels/cuda/check.h"

namespace mel::bench {

// False (and the benchmark marked skipped with the reason) when no GPU can run it.
inline bool require_gpu(benchmark::State& state) {
  if (cuda_device_count() > 0) return true;
  state.SkipWithError("no CUDA GPU is visible on this machine");
  return false;
}

inline Device gpu() {
  return Device::cuda(0);
}

// Theoretical DRAM bandwidth of cuda:0 in bytes/s (2 transfers per memory clock).
inline double peak_bandwidth() {
  int khz = 0, bits = 0;
  MEL_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, 0));
  MEL_CUDA_CHECK(cudaDeviceGetAttribute(&bits, cudaDevAttrGlobalMemoryBusWidth, 0));
  return 2.0 * khz * 1e3 * bits / 8.0;
}

inline std::string device_name() {
  cudaDeviceProp p{};
  MEL_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  return p.name;
}

// Overwrites a buffer larger than L2 so the next run reads from DRAM.
inline void flush_l2() {
  static Tensor junk = empty({int64_t(64) << 20}, DType::u8, gpu());  // 64 MiB > H100's 50 MiB L2
  junk.fill_(1);
}

// Runs f (which queues work on mel's stream of cuda:0) `warmup` times, then times each benchmark
// iteration with events on that stream and reports it through SetIterationTime. With flush, L2
// is flushed before every timed run (outside the timed region).
template <class F>
void time_gpu(benchmark::State& state, F&& f, bool flush = false, int warmup = 3) {
  cudaStream_t s = cuda_stream(gpu());
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t start, stop;
  MEL_CUDA_CHECK(cudaEventCreate(&start));
  MEL_CUDA_CHECK(cudaEventCreate(&stop));
  for (auto _ : state) {
    if (flush) flush_l2();
    MEL_CUDA_CHECK(cudaEventRecord(start, s));
    f();
    MEL_CUDA_CHECK(cudaEventRecord(stop, s));
    MEL_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    MEL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

}  // namespace mel::bench
