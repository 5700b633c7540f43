// The kernel simulator's host interface (tests/cudasim/runtime.cpp): launches, its settings and
// counters, and the error every check throws. docs/ARCHITECTURE.md, "Kernel simulator", describes
// what it checks and how to cover a new kernel.
#pragma once
#include <cuda_runtime_api.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace cudasim {

// A check of the simulator failed: the message names the launch site, the grid and block, the
// thread, the schedule and what went wrong.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Launch {
  const char* file = "";
  int line = 0;
  dim3 grid;
  dim3 block;
  size_t shared_bytes = 0;
  cudaStream_t stream = nullptr;
};

// Runs `body(ctx)` as every thread of every block of the launch, once per schedule, and checks
// that every schedule leaves the device memory the launch can reach (the allocations that `refs`,
// the arguments' pointers and 8-byte words, point into) byte for byte the same.
void run_launch(const Launch& launch, void (*body)(void*), void* ctx,
                const std::vector<uintptr_t>& refs);
void check_pointer_argument(const Launch& launch, int index, const void* p);
void check_struct_argument(const Launch& launch, int index, const void* data, size_t bytes);

// Settings, read from the environment on first use and adjustable by tests:
//   MEL_CUDASIM_SCHEDULES  how many schedules run each launch: 1 forward, 2 + reverse,
//                          3 + random (default 3)
//   MEL_CUDASIM_SEED       seed of the random schedule (default 1)
//   MEL_CUDASIM_GRID_CAP   blocks a grid-stride launch (kernels::cuda::grid_for) gets at most,
//                          so that its loops wrap (default 3)
//   MEL_CUDASIM_INDEX32_LIMIT  element counts above it take the kernels' 64-bit index paths
//                          (kernels::cuda::index32_limit; default 2^31 - 1, as on a GPU)
struct Settings {
  int schedules = 3;
  uint64_t seed = 1;
  unsigned grid_cap = 3;
  int64_t index32_limit = INT32_MAX;
};
Settings& settings();
unsigned grid_cap();
int64_t index32_limit();

// What the simulator has done in this process.
struct Counters {
  uint64_t launches = 0;        // kernel launches
  uint64_t block_runs = 0;      // blocks run (all schedules)
  uint64_t thread_runs = 0;     // threads run (all schedules)
  uint64_t barriers = 0;        // __syncthreads rendezvous resolved
  uint64_t warp_ops = 0;        // shuffles and votes resolved (per warp)
  uint64_t bytes_compared = 0;  // device bytes compared between schedules
  uint64_t pointer_checks = 0;  // kernel arguments checked
  uint64_t allocations = 0;     // cudaMalloc calls
};
const Counters& counters();
// Writes the counters to stderr as one line when the process exits (set MEL_CUDASIM_REPORT=1).
void print_counters();

// Device memory introspection for tests: the live allocation holding p, or false.
bool is_device_pointer(const void* p);

}  // namespace cudasim
