// The kernel simulator's runtime: device memory with guard pages, the fiber scheduler that runs
// each block's threads, the rendezvous checks of barriers and warp operations, the comparison of
// schedules, and the CUDA runtime API calls mel makes (docs/ARCHITECTURE.md, "Kernel
// simulator").
//
// Device memory lives in one reserved address range. Every allocation gets its own pages, ends
// (rounded up to 16 bytes) on a page boundary and is followed by an inaccessible guard page, so a
// kernel that reads or writes past the end faults; the few bytes between the end and the 16-byte
// boundary hold a canary of the allocation's own and are checked after every launch. Freed
// allocations become inaccessible and their addresses are never reused. Outside launches and the
// simulator's own copies device memory is inaccessible too: host code that dereferences a device
// pointer faults, and the fault is reported as host-device cross access.
//
// A launch runs once per schedule (forward, reverse, random): blocks in that order, threads of a
// block in that order between rendezvous points. Each run starts from the same device memory and
// fills shared memory with a different pattern (0xff, 0x7f, random bytes); the runs must leave
// device memory byte for byte equal, else the result depends on the schedule (a race) or on
// uninitialised shared memory.
#include <sanitizer/common_interface_defs.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cub/device/device_radix_sort.cuh"
#include "cudasim/device.h"

extern "C" void cudasim_switch(void** from_sp, void* to_sp);
extern "C" void cudasim_fiber_start();
extern "C" void cudasim_fiber_entry();

namespace cudasim {

BuiltIns g_builtins;

namespace {

// ---- settings and counters ---------------------------------------------------------------------

Counters g_counters;

uint64_t env_number(const char* name, uint64_t fallback, uint64_t lo, uint64_t hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  unsigned long long x = std::strtoull(v, &end, 10);
  if (*end != '\0' || x < lo || x > hi) {
    std::fprintf(stderr, "cudasim: %s=%s is not a number in [%llu, %llu]\n", name, v,
                 static_cast<unsigned long long>(lo), static_cast<unsigned long long>(hi));
    std::exit(2);
  }
  return x;
}

// Launch sites run in this process ("file:line"), written at exit to
// $MEL_CUDASIM_COVERAGE_DIR/<pid>.txt when that is set (tests/cudasim/coverage.sh checks that every
// launch of kernels/cuda ran in the suite).
std::set<std::string>& launch_sites() {
  static auto* sites = new std::set<std::string>;  // never destroyed: read by an atexit handler
  return *sites;
}

void write_coverage() {
  const char* dir = std::getenv("MEL_CUDASIM_COVERAGE_DIR");
  if (!dir || !*dir) return;
  std::string path = std::string(dir) + "/" + std::to_string(getpid()) + ".txt";
  if (FILE* f = std::fopen(path.c_str(), "w")) {
    for (const std::string& s : launch_sites()) std::fprintf(f, "%s\n", s.c_str());
    const Counters& c = g_counters;
    std::fprintf(f, "#counters %llu %llu %llu %llu %llu %llu %llu\n",
                 (unsigned long long)c.launches, (unsigned long long)c.block_runs,
                 (unsigned long long)c.thread_runs, (unsigned long long)c.barriers,
                 (unsigned long long)c.warp_ops, (unsigned long long)c.bytes_compared,
                 (unsigned long long)c.pointer_checks);
    std::fclose(f);
  }
}

// Every process that links the simulator writes its file (an empty one when it launched nothing),
// so coverage.sh can tell a whole run from a partial one.
const bool g_coverage_registered = (std::atexit(write_coverage), true);

Settings make_settings() {
  Settings s;
  s.schedules = static_cast<int>(env_number("MEL_CUDASIM_SCHEDULES", 3, 1, 3));
  s.seed = env_number("MEL_CUDASIM_SEED", 1, 0, ~uint64_t(0));
  s.grid_cap = static_cast<unsigned>(env_number("MEL_CUDASIM_GRID_CAP", 3, 1, 1u << 16));
  s.index32_limit =
      static_cast<int64_t>(env_number("MEL_CUDASIM_INDEX32_LIMIT", INT32_MAX, 1, INT32_MAX));
  if (const char* r = std::getenv("MEL_CUDASIM_REPORT"); r && std::string(r) == "1") {
    std::atexit(print_counters);
  }
  return s;
}

const char* schedule_name(int s) {
  static const char* names[] = {"forward", "reverse", "random"};
  return names[s];
}

std::string dim_str(dim3 d) {
  char b[48];
  std::snprintf(b, sizeof b, "(%u,%u,%u)", d.x, d.y, d.z);
  return b;
}

std::string hex(uintptr_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%zx", static_cast<size_t>(v));
  return b;
}

// The one lock of the simulator: launches, allocations and copies are serialised (shared
// memory, the built-in variables and the protection state are process-wide).
std::recursive_mutex& sim_mutex() {
  static std::recursive_mutex m;
  return m;
}

// ---- device memory
// -------------------------------------------------------------------------------

constexpr size_t kArenaBytes = size_t(1) << 40;  // address space only (MAP_NORESERVE)
constexpr size_t kAlign = 16;
const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

struct Allocation {
  uint64_t id = 0;
  uintptr_t pages = 0;    // first page of the allocation's own pages
  size_t page_bytes = 0;  // accessible pages (the guard page follows)
  uintptr_t data = 0;     // what cudaMalloc returned
  size_t size = 0;        // requested bytes
  size_t rounded = 0;     // size rounded up to kAlign; [size, rounded) holds canary(id, k)
  bool freed = false;
};
// Byte k of an allocation's slack (between its end and the 16-byte boundary): different for every
// allocation, so a copy from one slack to another is still a change.
unsigned char canary(uint64_t id, size_t k) {
  uint64_t z = id * 0x9e3779b97f4a7c15ull + k * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
  return static_cast<unsigned char>((z >> 32) | 0x80);
}

// Fills an allocation's slack with its canary (its pages must be accessible).
void write_canary(const Allocation& al) {
  auto* p = reinterpret_cast<unsigned char*>(al.data);
  for (size_t i = al.size; i < al.rounded; ++i) p[i] = canary(al.id, i - al.size);
}

// How many bytes past the end the first damaged canary byte is, or -1 when the slack is intact.
int64_t canary_damage(const Allocation& al) {
  const auto* p = reinterpret_cast<const unsigned char*>(al.data);
  for (size_t i = al.size; i < al.rounded; ++i) {
    if (p[i] != canary(al.id, i - al.size)) return static_cast<int64_t>(i - al.size);
  }
  return -1;
}

struct Memory {
  uintptr_t base = 0, next = 0, end = 0;
  uint64_t next_id = 1;
  std::map<uintptr_t, Allocation> by_data;  // live, by data address
  std::map<uintptr_t, Allocation> freed;    // freed, by data address (for messages)
  bool open = false;                        // data pages accessible right now
  size_t live_bytes = 0;
  // Freed slots stay inaccessible in a quarantine (a use after free faults) for the next
  // kQuarantineBytes of frees; then their pages can serve an allocation of the same page count.
  struct Slot {
    uintptr_t pages, data;
    size_t page_bytes;
  };
  std::vector<Slot> quarantine;  // oldest first
  size_t quarantine_head = 0, quarantine_bytes = 0;
  std::map<size_t, std::vector<uintptr_t>> reusable;  // page_bytes -> slots

  void reserve() {
    if (base) return;
    void* p =
        mmap(nullptr, kArenaBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "cudasim: cannot reserve %zu bytes of address space for device memory\n",
                   kArenaBytes);
      std::abort();
    }
    base = next = reinterpret_cast<uintptr_t>(p);
    end = base + kArenaBytes;
  }
  bool in_arena(uintptr_t a) const { return base && a >= base && a < end; }

  // The live allocation containing a (data .. data+size, one past the end included when
  // `one_past` is set), or null.
  const Allocation* live_at(uintptr_t a, bool one_past = false) const {
    auto it = by_data.upper_bound(a);
    if (it == by_data.begin()) return nullptr;
    --it;
    const Allocation& al = it->second;
    if (a < al.data + al.size || (one_past && a == al.data + al.size)) return &al;
    return nullptr;
  }
  // Any allocation (live or freed) whose pages contain a, for messages.
  const Allocation* near(uintptr_t a) const {
    for (const auto* m : {&by_data, &freed}) {
      auto it = m->upper_bound(a + kPage);
      while (it != m->begin()) {
        --it;
        const Allocation& al = it->second;
        if (a >= al.pages && a < al.pages + al.page_bytes + kPage) return &al;
        if (al.pages + al.page_bytes + kPage < a) break;
      }
    }
    return nullptr;
  }

  void protect(const Allocation& al, int prot) {
    if (mprotect(reinterpret_cast<void*>(al.pages), al.page_bytes, prot) != 0) {
      std::perror("cudasim: mprotect");
      std::abort();
    }
  }
  void set_open(bool on) {
    if (open == on) return;
    for (auto& [d, al] : by_data) protect(al, on ? PROT_READ | PROT_WRITE : PROT_NONE);
    open = on;
  }
};

Memory& memory() {
  static Memory m;
  return m;
}

std::string describe_allocation(const Allocation& al) {
  return "allocation #" + std::to_string(al.id) + " (" + std::to_string(al.size) + " bytes at " +
         hex(al.data) + (al.freed ? ", freed" : "") + ")";
}

// Where an address is, in words, for a fault or a bad argument.
std::string describe_address(uintptr_t a, bool in_kernel = false) {
  Memory& m = memory();
  if (!m.in_arena(a)) return hex(a) + " (not device memory)";
  if (const Allocation* al = m.near(a)) {
    if (al->freed) return hex(a) + ": inside " + describe_allocation(*al) + ", used after cudaFree";
    if (in_kernel && a >= al->data && a < al->data + al->size) {
      return hex(a) + ": inside " + describe_allocation(*al) +
             ", which no argument of the kernel points into";
    }
    if (a >= al->data + al->size) {
      return hex(a) + ": " + std::to_string(a - al->data - al->size) + " bytes past the end of " +
             describe_allocation(*al);
    }
    if (a < al->data) {
      return hex(a) + ": " + std::to_string(al->data - a) + " bytes before the start of " +
             describe_allocation(*al);
    }
    return hex(a) + ": inside " + describe_allocation(*al);
  }
  return hex(a) + " (device address range, no allocation)";
}

// ---- fibers
// -------------------------------------------------------------------------------------- A minimal
// x86-64 System V context switch (callee-saved registers, the stack pointer, MXCSR and the x87
// control word): ucontext's swapcontext makes a system call per switch, this does not.
// cudasim_switch(&from_sp, to_sp) saves the running context on its stack, stores that stack
// pointer in *from_sp and resumes the one saved at to_sp. A new fiber's stack is laid out so that
// the first switch to it "returns" into cudasim_fiber_start, which calls fiber_entry().
asm(R"(
  .text
  .globl cudasim_switch
  .type cudasim_switch, @function
cudasim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cudasim_switch, .-cudasim_switch

  .globl cudasim_fiber_start
  .type cudasim_fiber_start, @function
cudasim_fiber_start:
  call cudasim_fiber_entry
  ud2
  .size cudasim_fiber_start, .-cudasim_fiber_start
)");

// The stack pointer a new fiber starts from, on a stack whose highest address is `top`.
void* fresh_fiber_stack(char* top) {
  auto a = reinterpret_cast<uintptr_t>(top) & ~uintptr_t(15);
  a -= 16;  // rsp after the first switch's `ret`: 16-aligned, as before a call
  auto* words = reinterpret_cast<uint64_t*>(a);
  words[-1] = reinterpret_cast<uint64_t>(&cudasim_fiber_start);  // return address
  for (int i = 2; i <= 7; ++i) words[-i] = 0;                    // rbp rbx r12..r15
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  auto* env = reinterpret_cast<unsigned char*>(&words[-8]);
  std::memcpy(env, &mxcsr, 4);
  std::memcpy(env + 4, &fpucw, 2);
  return &words[-8];
}

// ---- launch state
// ----------------------------------------------------------------------------------

enum class State { ready, barrier, warp, done };

struct Thread {
  void* sp = nullptr;  // saved stack pointer while switched out
  char* stack = nullptr;
  int linear = 0;
  uint3 idx{};
  State state = State::ready;
  const char* file = "";
  int line = 0;
  WarpOp op = WarpOp::shfl;
  unsigned mask = 0;
  int arg = 0, width = 32;
  unsigned char value[16]{};
  size_t bytes = 0;
  unsigned char result[16]{};
};

constexpr size_t kStackBytes = size_t(256) << 10;
constexpr size_t kSharedBytes = size_t(48) << 10;

struct Run {
  const Launch* launch = nullptr;
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  int schedule = 0;
  std::mt19937_64 rng;
  uint3 block{};
  std::vector<Thread> threads;
  Thread* current = nullptr;
  void* scheduler = nullptr;  // the scheduler's saved stack pointer while a fiber runs
  std::string error;          // set by a thread (or the fault handler) that failed
  // shared memory of the running block
  unsigned char* shared = nullptr;
  unsigned char fill = 0;  // shared memory's fill byte (schedule 3: random bytes)
  struct Slot {
    const void* tag;
    size_t offset, bytes;
    const char* name;
  };
  std::vector<Slot> slots;
  size_t shared_used = 0;
  sigjmp_buf fault_jump;
  bool in_kernel = false;
};

Run* g_run = nullptr;  // the launch being simulated (null outside launches)

std::vector<char*>& stack_pool() {
  static std::vector<char*> pool;
  return pool;
}

char* stack_for(size_t i) {
  auto& pool = stack_pool();
  while (pool.size() <= i) {
    // a guard page below each stack: a thread that overflows its stack faults
    void* p = mmap(nullptr, kStackBytes + kPage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("cudasim: fiber stack");
      std::abort();
    }
    mprotect(p, kPage, PROT_NONE);
    pool.push_back(static_cast<char*>(p) + kPage);
  }
  return pool[i];
}

unsigned char* shared_arena() {
  static unsigned char* arena = [] {
    // the arena ends at a guard page: an access past 48 KiB of shared memory faults
    void* p = mmap(nullptr, kSharedBytes + kPage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("cudasim: shared memory");
      std::abort();
    }
    mprotect(static_cast<unsigned char*>(p) + kSharedBytes, kPage, PROT_NONE);
    return static_cast<unsigned char*>(p);
  }();
  return arena;
}

std::string where(const Run& r) {
  const Launch& l = *r.launch;
  std::string s = "kernel launched at " + std::string(l.file) + ":" + std::to_string(l.line) +
                  " with grid " + dim_str(l.grid) + " and block " + dim_str(l.block) +
                  ", schedule " + schedule_name(r.schedule) + ": block " +
                  dim_str(dim3(r.block.x, r.block.y, r.block.z));
  if (r.current) {
    s += ", thread " + dim_str(dim3(r.current->idx.x, r.current->idx.y, r.current->idx.z));
  }
  return s;
}

[[noreturn]] void fail_in_thread(const std::string& msg) {
  Run& r = *g_run;
  r.error = msg;
  cudasim_switch(&r.current->sp, r.scheduler);
  std::abort();  // never resumed
}

}  // namespace
}  // namespace cudasim

extern "C" void cudasim_fiber_entry() {
  cudasim::Run& r = *cudasim::g_run;
  r.body(r.ctx);
  r.current->state = cudasim::State::done;
  cudasim_switch(&r.current->sp, r.scheduler);
  std::abort();  // a finished fiber is never resumed
}

namespace cudasim {
namespace {

// ---- faults ------------------------------------------------------------------------------------

struct sigaction g_old_segv, g_old_bus;

void fault_handler(int sig, siginfo_t* info, void* uctx) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
  Run* r = g_run;
  if (r && r->in_kernel) {
    std::string what = "invalid memory access at " + describe_address(a, /*in_kernel=*/true);
    if (a >= reinterpret_cast<uintptr_t>(shared_arena()) + kSharedBytes &&
        a < reinterpret_cast<uintptr_t>(shared_arena()) + kSharedBytes + kPage) {
      what = "shared memory access beyond 48 KiB at " + hex(a);
    }
    r->error = what;
    siglongjmp(r->fault_jump, 1);
  }
  Memory& m = memory();
  if (m.in_arena(a)) {
    std::string msg = "cudasim: host code accessed device memory at " + describe_address(a) +
                      ": device memory is read and written by kernels and cudaMemcpy only\n";
    ssize_t ignored = write(2, msg.data(), msg.size());
    (void)ignored;
  }
  // Not ours: let the previous handler (or the default action) take it.
  struct sigaction& old = sig == SIGSEGV ? g_old_segv : g_old_bus;
  sigaction(sig, &old, nullptr);
  if (old.sa_flags & SA_SIGINFO && old.sa_sigaction) {
    old.sa_sigaction(sig, info, uctx);
  }
}

void install_fault_handler() {
  static bool done = [] {
    static std::vector<char> alt(size_t(1) << 16);
    stack_t ss{};
    ss.ss_sp = alt.data();
    ss.ss_size = alt.size();
    sigaltstack(&ss, nullptr);
    struct sigaction sa {};
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
    return true;
  }();
  (void)done;
}

// UBSan (misaligned vector loads, array bounds, overflow in the kernels) halts the process; say
// which launch and thread it was in first.
void ubsan_death() {
  if (g_run && g_run->in_kernel) {
    std::string msg = "cudasim: undefined behaviour in " + where(*g_run) + "\n";
    ssize_t ignored = write(2, msg.data(), msg.size());
    (void)ignored;
  }
}

// ---- one block ---------------------------------------------------------------------------------

std::vector<int> order_of(Run& r, std::vector<int> ids) {
  if (r.schedule == 1) std::reverse(ids.begin(), ids.end());
  if (r.schedule == 2) std::shuffle(ids.begin(), ids.end(), r.rng);
  return ids;
}

std::string thread_str(const Thread& t) {
  return "thread " + dim_str(dim3(t.idx.x, t.idx.y, t.idx.z));
}

std::string site(const Thread& t) {
  return std::string(t.file) + ":" + std::to_string(t.line);
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::shfl:
      return "__shfl_sync";
    case WarpOp::shfl_up:
      return "__shfl_up_sync";
    case WarpOp::shfl_down:
      return "__shfl_down_sync";
    case WarpOp::shfl_xor:
      return "__shfl_xor_sync";
    case WarpOp::ballot:
      return "__ballot_sync";
    case WarpOp::any:
      return "__any_sync";
    case WarpOp::all:
      return "__all_sync";
    case WarpOp::syncwarp:
      return "__syncwarp";
  }
  return "?";
}

[[noreturn]] void fail_block(Run& r, const std::string& msg) {
  r.current = nullptr;
  throw Error("cudasim: " + where(r) + ": " + msg);
}

// Completes every warp operation whose lanes have all arrived; true when one was.
bool resolve_warps(Run& r) {
  const int n = static_cast<int>(r.threads.size());
  bool progressed = false;
  for (int w0 = 0; w0 < n; w0 += 32) {
    const int lanes = std::min(32, n - w0);
    for (int l = 0; l < lanes; ++l) {
      Thread& t = r.threads[w0 + l];
      if (t.state != State::warp) continue;
      const unsigned mask = t.mask;
      if (!(mask & (1u << l))) {
        r.current = &t;
        fail_block(r, std::string(op_name(t.op)) + " at " + site(t) + " with mask " + hex(mask) +
                          " that leaves out the calling lane " + std::to_string(l));
      }
      bool complete = true;
      for (int k = 0; k < 32 && complete; ++k) {
        if (!(mask & (1u << k))) continue;
        if (k >= lanes) {
          fail_block(r, std::string(op_name(t.op)) + " at " + site(t) + " with mask " + hex(mask) +
                            " in a partial warp: lane " + std::to_string(k) +
                            " does not exist (warp of " + std::to_string(lanes) +
                            " threads starting at thread " + std::to_string(w0) + ")");
        }
        Thread& o = r.threads[w0 + k];
        if (o.state == State::warp) {
          if (o.op != t.op || o.mask != t.mask || o.width != t.width) {
            fail_block(r, "divergent warp operation: lane " + std::to_string(l) + " is in " +
                              op_name(t.op) + " at " + site(t) + " (mask " + hex(t.mask) +
                              ") while lane " + std::to_string(k) + " is in " + op_name(o.op) +
                              " at " + site(o) + " (mask " + hex(o.mask) + ")");
          }
          continue;
        }
        if (o.state == State::ready) {
          complete = false;  // cannot happen: resolution runs when no thread is ready
          continue;
        }
        fail_block(r, std::string(op_name(t.op)) + " at " + site(t) + " with mask " + hex(mask) +
                          ": lane " + std::to_string(k) + " (" + thread_str(o) + ") " +
                          (o.state == State::done ? "has exited"
                                                  : "waits at __syncthreads at " + site(o)) +
                          " instead of joining it");
      }
      if (!complete) continue;
      // every lane of the mask has arrived: compute what each receives
      unsigned votes = 0;
      for (int k = 0; k < lanes; ++k) {
        const Thread& o = r.threads[w0 + k];
        if ((mask & (1u << k)) && o.bytes >= sizeof(int)) {
          int pred;
          std::memcpy(&pred, o.value, sizeof(int));
          if (pred) votes |= 1u << k;
        }
      }
      for (int k = 0; k < lanes; ++k) {
        if (!(mask & (1u << k))) continue;
        Thread& o = r.threads[w0 + k];
        const int w = o.width;
        const int seg = (k / w) * w;
        int src = k;
        switch (o.op) {
          case WarpOp::shfl:
            src = seg + ((o.arg % w) + w) % w;
            break;
          case WarpOp::shfl_up:
            src = k - o.arg >= seg ? k - o.arg : k;
            break;
          case WarpOp::shfl_down:
            src = k + o.arg < seg + w ? k + o.arg : k;
            break;
          case WarpOp::shfl_xor:
            src = (k ^ o.arg) < seg + w ? (k ^ o.arg) : k;
            break;
          default:
            break;
        }
        if (o.op == WarpOp::ballot || o.op == WarpOp::any || o.op == WarpOp::all ||
            o.op == WarpOp::syncwarp) {
          unsigned v = votes;
          if (o.op == WarpOp::any) v = votes != 0;
          if (o.op == WarpOp::all) v = (votes & mask) == mask;
          std::memcpy(o.result, &v, sizeof v);
        } else {
          if (src < 0 || src >= lanes || !(mask & (1u << src))) {
            r.current = &o;
            fail_block(r, std::string(op_name(o.op)) + " at " + site(o) + ": lane " +
                              std::to_string(k) + " reads lane " + std::to_string(src) +
                              ", which is not in the mask " + hex(mask));
          }
          std::memcpy(o.result, r.threads[w0 + src].value, sizeof o.result);
        }
        o.state = State::ready;
      }
      ++g_counters.warp_ops;
      progressed = true;
    }
  }
  return progressed;
}

void resolve_barrier(Run& r) {
  const Thread* first = nullptr;
  const Thread* exited = nullptr;
  int waiting = 0, gone = 0;
  for (const Thread& t : r.threads) {
    if (t.state == State::done) {
      if (!exited) exited = &t;
      ++gone;
      continue;
    }
    if (t.state != State::barrier) continue;  // warp waits were checked by resolve_warps
    ++waiting;
    if (!first) {
      first = &t;
    } else if (t.file != first->file || t.line != first->line) {
      fail_block(r, "divergent __syncthreads: " + thread_str(*first) + " waits at " + site(*first) +
                        " while " + thread_str(t) + " waits at " + site(t));
    }
  }
  if (!first) return;
  if (gone > 0) {
    fail_block(r, "divergent __syncthreads at " + site(*first) + ": " + std::to_string(waiting) +
                      " threads wait there while " + std::to_string(gone) +
                      " have exited (first: " + thread_str(*exited) + ")");
  }
  for (Thread& t : r.threads) t.state = State::ready;
  ++g_counters.barriers;
}

void run_block(Run& r, uint3 block) {
  const Launch& l = *r.launch;
  const int nx = l.block.x, ny = l.block.y, nz = l.block.z;
  const int n = nx * ny * nz;
  r.block = block;
  g_builtins.block_idx = block;
  r.slots.clear();
  r.shared_used = 0;

  r.threads.resize(n);
  for (int i = 0; i < n; ++i) {
    Thread& t = r.threads[i];
    t.linear = i;
    t.idx = uint3{unsigned(i % nx), unsigned((i / nx) % ny), unsigned(i / (nx * ny))};
    t.state = State::ready;
    t.stack = stack_for(i);
    t.sp = fresh_fiber_stack(t.stack + kStackBytes);
  }
  g_counters.thread_runs += n;
  ++g_counters.block_runs;
  std::vector<int> ids;
  ids.reserve(n);
  if (sigsetjmp(r.fault_jump, 1) != 0) {
    r.in_kernel = false;
    throw Error("cudasim: " + where(r) + ": " + r.error);
  }
  while (true) {
    ids.clear();
    for (int i = 0; i < n; ++i) {
      if (r.threads[i].state == State::ready) ids.push_back(i);
    }
    if (ids.empty()) {
      bool all_done = std::all_of(r.threads.begin(), r.threads.end(),
                                  [](const Thread& t) { return t.state == State::done; });
      if (all_done) break;
      r.current = nullptr;
      if (resolve_warps(r)) continue;
      resolve_barrier(r);
      continue;
    }
    for (int i : order_of(r, ids)) {
      Thread& t = r.threads[i];
      if (t.state != State::ready) continue;
      r.current = &t;
      g_builtins.thread_idx = t.idx;
      r.in_kernel = true;
      cudasim_switch(&r.scheduler, t.sp);
      r.in_kernel = false;
      if (!r.error.empty()) throw Error("cudasim: " + where(r) + ": " + r.error);
    }
  }
  r.current = nullptr;
}

std::string launch_config_error(const Launch& l) {
  const uint64_t threads = uint64_t(l.block.x) * l.block.y * l.block.z;
  if (l.block.x == 0 || l.block.y == 0 || l.block.z == 0) return "a block dimension is 0";
  if (threads > 1024) return "the block has " + std::to_string(threads) + " threads (at most 1024)";
  if (l.block.z > 64) return "block.z is above 64";
  if (l.grid.x == 0 || l.grid.y == 0 || l.grid.z == 0) return "a grid dimension is 0";
  if (l.grid.x > 0x7fffffffu) return "grid.x is above 2^31 - 1";
  if (l.grid.y > 65535 || l.grid.z > 65535) return "grid.y or grid.z is above 65535";
  if (l.shared_bytes > kSharedBytes) return "dynamic shared memory above 48 KiB";
  return "";
}

cudaError_t g_last_error = cudaSuccess;

struct Snapshot {
  const Allocation* al;
  std::vector<unsigned char> bytes;
};

void check_canaries(const Run& r, const std::vector<const Allocation*>& reach) {
  for (const Allocation* a : reach) {
    const Allocation& al = *a;
    if (const int64_t past = canary_damage(al); past >= 0) {
      write_canary(al);  // reported once (cudaFree would report it again)
      throw Error("cudasim: " + where(r) + ": write " + std::to_string(past) +
                  " bytes past the end of " + describe_allocation(al));
    }
  }
}

}  // namespace

// ---- public entry points
// --------------------------------------------------------------------------

Settings& settings() {
  static Settings s = make_settings();
  return s;
}

unsigned grid_cap() {
  return settings().grid_cap;
}

int64_t index32_limit() {
  return settings().index32_limit;
}

const Counters& counters() {
  return g_counters;
}

void print_counters() {
  const Counters& c = g_counters;
  std::fprintf(
      stderr,
      "cudasim: %llu launches, %llu block runs, %llu thread runs, %llu barriers, %llu warp "
      "operations, %llu bytes compared between schedules, %llu pointer checks, %llu "
      "allocations\n",
      (unsigned long long)c.launches, (unsigned long long)c.block_runs,
      (unsigned long long)c.thread_runs, (unsigned long long)c.barriers,
      (unsigned long long)c.warp_ops, (unsigned long long)c.bytes_compared,
      (unsigned long long)c.pointer_checks, (unsigned long long)c.allocations);
}

bool is_device_pointer(const void* p) {
  std::lock_guard<std::recursive_mutex> lock(sim_mutex());
  return memory().live_at(reinterpret_cast<uintptr_t>(p)) != nullptr;
}

void syncthreads(const char* file, int line) {
  Run& r = *g_run;
  Thread& t = *r.current;
  t.state = State::barrier;
  t.file = file;
  t.line = line;
  cudasim_switch(&t.sp, r.scheduler);
}

void warp_exchange(WarpOp op, unsigned mask, const void* value, size_t bytes, int arg, int width,
                   void* out, const char* file, int line) {
  Run& r = *g_run;
  Thread& t = *r.current;
  if (op == WarpOp::syncwarp && mask == 0) mask = 0xffffffffu;
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
    fail_in_thread(std::string(op_name(op)) + " at " + file + ":" + std::to_string(line) +
                   " with width " + std::to_string(width) + " (a power of two up to 32)");
  }
  t.state = State::warp;
  t.op = op;
  t.mask = mask;
  t.arg = arg;
  t.width = width;
  t.file = file;
  t.line = line;
  std::memset(t.value, 0, sizeof t.value);
  std::memcpy(t.value, value, bytes);
  t.bytes = bytes;
  cudasim_switch(&t.sp, r.scheduler);
  const size_t out_bytes = (op == WarpOp::shfl || op == WarpOp::shfl_up ||
                            op == WarpOp::shfl_down || op == WarpOp::shfl_xor)
                               ? bytes
                               : sizeof(unsigned);
  std::memcpy(out, t.result, out_bytes);
}

unsigned active_mask() {
  Run& r = *g_run;
  const int lane = r.current->linear % 32, w0 = r.current->linear - lane;
  unsigned m = 0;
  for (int k = 0; k < 32 && w0 + k < static_cast<int>(r.threads.size()); ++k) {
    if (r.threads[w0 + k].state != State::done) m |= 1u << k;
  }
  return m;
}

void* shared_slot(const void* tag, size_t bytes, size_t align, const char* name) {
  Run& r = *g_run;
  for (const Run::Slot& s : r.slots) {
    if (s.tag == tag) return r.shared + s.offset;
  }
  size_t off = (r.shared_used + align - 1) / align * align;
  if (off + bytes > kSharedBytes - r.launch->shared_bytes) {
    fail_in_thread("__shared__ " + std::string(name) + " (" + std::to_string(bytes) +
                   " bytes) does not fit in 48 KiB of shared memory");
  }
  r.slots.push_back({tag, off, bytes, name});
  r.shared_used = off + bytes;
  // shared memory starts as garbage: the schedule's fill byte, or random bytes
  unsigned char* p = r.shared + off;
  if (r.schedule == 2) {
    for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(r.rng() >> 17);
  } else {
    std::memset(p, r.fill, bytes);
  }
  return p;
}

void check_pointer_argument(const Launch& l, int index, const void* p) {
  std::lock_guard<std::recursive_mutex> lock(sim_mutex());
  ++g_counters.pointer_checks;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a == 0) return;
  Memory& m = memory();
  if (m.live_at(a, /*one_past=*/true)) return;
  throw Error("cudasim: kernel launched at " + std::string(l.file) + ":" + std::to_string(l.line) +
              ": pointer argument " + std::to_string(index) + " is " +
              (m.in_arena(a) ? describe_address(a) : hex(a) + ", host memory, not device memory"));
}

namespace {
// Host pointers a kernel argument might carry by mistake: pinned staging buffers, the stack and
// the heap of this process.
struct HostRanges {
  std::map<uintptr_t, size_t> pinned;
};
HostRanges& host_ranges() {
  static HostRanges h;
  return h;
}
bool looks_like_host_pointer(uintptr_t a) {
  auto& pinned = host_ranges().pinned;
  auto it = pinned.upper_bound(a);
  if (it != pinned.begin()) {
    --it;
    if (a < it->first + it->second) return true;
  }
  int local = 0;
  const uintptr_t sp = reinterpret_cast<uintptr_t>(&local);
  if (a > sp - (size_t(8) << 20) && a < sp + (size_t(8) << 20)) return true;
  static const uintptr_t heap_start = reinterpret_cast<uintptr_t>(sbrk(0));
  const uintptr_t heap_end = reinterpret_cast<uintptr_t>(sbrk(0));
  return a >= heap_start - (size_t(64) << 20) && a < heap_end;
}
}  // namespace

void check_struct_argument(const Launch& l, int index, const void* data, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(sim_mutex());
  Memory& m = memory();
  for (size_t off = 0; off + 8 <= bytes; off += 8) {
    uintptr_t w;
    std::memcpy(&w, static_cast<const char*>(data) + off, 8);
    if (w == 0) continue;
    ++g_counters.pointer_checks;
    std::string what;
    if (m.in_arena(w)) {
      if (!m.live_at(w, true)) what = describe_address(w);
    } else if (looks_like_host_pointer(w)) {
      what = hex(w) + ", host memory, not device memory";
    }
    if (!what.empty()) {
      throw Error("cudasim: kernel launched at " + std::string(l.file) + ":" +
                  std::to_string(l.line) + ": argument " + std::to_string(index) +
                  " holds a pointer at byte " + std::to_string(off) + " that is " + what);
    }
  }
}

void run_launch(const Launch& l, void (*body)(void*), void* ctx,
                const std::vector<uintptr_t>& refs) {
  std::lock_guard<std::recursive_mutex> lock(sim_mutex());
  install_fault_handler();
  static bool ubsan_hooked = [] {
    __sanitizer_set_death_callback(ubsan_death);
    return true;
  }();
  (void)ubsan_hooked;
  if (std::string e = launch_config_error(l); !e.empty()) {
    g_last_error = cudaErrorInvalidConfiguration;
    std::fprintf(stderr, "cudasim: launch at %s:%d: %s\n", l.file, l.line, e.c_str());
    return;
  }
  ++g_counters.launches;
  const Settings& s = settings();
  launch_sites().insert(std::string(l.file) + ":" + std::to_string(l.line));
  Memory& m = memory();
  // Only the allocations the arguments point into are accessible during the launch: a kernel that
  // touches any other device memory faults there.
  std::vector<const Allocation*> reach;
  for (uintptr_t w : refs) {
    const Allocation* al = m.in_arena(w) ? m.live_at(w, /*one_past=*/true) : nullptr;
    if (al && std::find(reach.begin(), reach.end(), al) == reach.end()) reach.push_back(al);
  }
  for (const Allocation* al : reach) m.protect(*al, PROT_READ | PROT_WRITE);
  struct Close {
    Memory& m;
    const std::vector<const Allocation*>& reach;
    ~Close() {
      g_run = nullptr;
      for (const Allocation* al : reach) m.protect(*al, PROT_NONE);
    }
  } close{m, reach};

  std::vector<Snapshot> before;
  if (s.schedules > 1) {
    for (const Allocation* al : reach) {
      const auto* p = reinterpret_cast<const unsigned char*>(al->data);
      before.push_back({al, std::vector<unsigned char>(p, p + al->size)});
    }
  }
  std::vector<Snapshot> first;
  const uint64_t total_blocks = uint64_t(l.grid.x) * l.grid.y * l.grid.z;
  for (int sched = 0; sched < s.schedules; ++sched) {
    Run r;
    r.launch = &l;
    r.body = body;
    r.ctx = ctx;
    r.schedule = sched;
    r.rng.seed(s.seed * 0x9e3779b97f4a7c15ull + g_counters.launches);
    r.shared = shared_arena();
    r.fill = sched == 0 ? 0xff : 0x7f;
    g_run = &r;
    g_builtins.grid_dim = l.grid;
    g_builtins.block_dim = l.block;
    if (sched > 0) {
      for (const Snapshot& b : before) {
        std::memcpy(reinterpret_cast<void*>(b.al->data), b.bytes.data(), b.bytes.size());
      }
    }
    std::vector<uint64_t> blocks(total_blocks);
    for (uint64_t i = 0; i < total_blocks; ++i) blocks[i] = i;
    if (sched == 1) std::reverse(blocks.begin(), blocks.end());
    if (sched == 2) std::shuffle(blocks.begin(), blocks.end(), r.rng);
    for (uint64_t b : blocks) {
      uint3 bi{unsigned(b % l.grid.x), unsigned((b / l.grid.x) % l.grid.y),
               unsigned(b / (uint64_t(l.grid.x) * l.grid.y))};
      run_block(r, bi);
    }
    check_canaries(r, reach);
    if (s.schedules == 1) break;
    if (sched == 0) {
      for (const Snapshot& b : before) {
        const auto* p = reinterpret_cast<const unsigned char*>(b.al->data);
        first.push_back({b.al, std::vector<unsigned char>(p, p + b.al->size)});
      }
      continue;
    }
    for (const Snapshot& f : first) {
      const auto* p = reinterpret_cast<const unsigned char*>(f.al->data);
      g_counters.bytes_compared += f.bytes.size();
      if (std::memcmp(p, f.bytes.data(), f.bytes.size()) == 0) continue;
      size_t i = 0;
      while (p[i] == f.bytes[i]) ++i;
      char vals[96];
      std::snprintf(vals, sizeof vals, "0x%02x under %s, 0x%02x under %s", f.bytes[i],
                    schedule_name(0), p[i], schedule_name(sched));
      r.current = nullptr;
      throw Error("cudasim: kernel launched at " + std::string(l.file) + ":" +
                  std::to_string(l.line) + " with grid " + dim_str(l.grid) + " and block " +
                  dim_str(l.block) +
                  ": the result depends on the schedule or on uninitialised shared memory: "
                  "byte " +
                  std::to_string(i) + " of " + describe_allocation(*f.al) + " is " + vals);
    }
  }
}

// ---- device memory API used by the CUDA runtime functions below
// -----------------------------------

namespace {

void* device_malloc(size_t size) {
  install_fault_handler();
  Memory& m = memory();
  m.reserve();
  const size_t rounded = std::max<size_t>((size + kAlign - 1) / kAlign * kAlign, kAlign);
  const size_t page_bytes = (rounded + kPage - 1) / kPage * kPage;
  Allocation al;
  al.id = m.next_id++;
  if (auto it = m.reusable.find(page_bytes); it != m.reusable.end() && !it->second.empty()) {
    al.pages = it->second.back();
    it->second.pop_back();
  } else {
    if (m.next + page_bytes + kPage > m.end) return nullptr;
    al.pages = m.next;
    m.next += page_bytes + kPage;  // the guard page stays PROT_NONE
  }
  al.page_bytes = page_bytes;
  al.data = al.pages + page_bytes - rounded;
  al.size = size;
  al.rounded = rounded;
  m.protect(al, PROT_READ | PROT_WRITE);
  // fresh device memory is garbage, not zeros: 0xa5 everywhere, the tail canary after the end
  std::memset(reinterpret_cast<void*>(al.data), 0xa5, size);
  write_canary(al);
  if (!m.open) m.protect(al, PROT_NONE);
  m.by_data[al.data] = al;
  m.live_bytes += size;
  ++g_counters.allocations;
  return reinterpret_cast<void*>(al.data);
}

cudaError_t device_free(void* p) {
  Memory& m = memory();
  auto it = m.by_data.find(reinterpret_cast<uintptr_t>(p));
  if (it == m.by_data.end()) {
    throw Error("cudasim: cudaFree(" + describe_address(reinterpret_cast<uintptr_t>(p)) +
                "): not the start of a live device allocation");
  }
  Allocation al = it->second;
  // the tail canary must have survived every launch and copy
  m.protect(al, PROT_READ | PROT_WRITE);
  if (const int64_t past = canary_damage(al); past >= 0) {
    throw Error("cudasim: cudaFree: " + describe_allocation(al) + " was written " +
                std::to_string(past) + " bytes past its end");
  }
  if (al.page_bytes >= (size_t(1) << 20)) {
    madvise(reinterpret_cast<void*>(al.pages), al.page_bytes, MADV_DONTNEED);
  }
  m.protect(al, PROT_NONE);
  m.by_data.erase(it);
  m.live_bytes -= al.size;
  al.freed = true;
  m.freed[al.data] = al;
  m.quarantine.push_back({al.pages, al.data, al.page_bytes});
  m.quarantine_bytes += al.page_bytes;
  constexpr size_t kQuarantineBytes = size_t(256) << 20;
  while (m.quarantine_bytes > kQuarantineBytes) {
    const Memory::Slot old = m.quarantine[m.quarantine_head++];
    m.quarantine_bytes -= old.page_bytes;
    m.freed.erase(old.data);
    m.reusable[old.page_bytes].push_back(old.pages);
  }
  if (m.quarantine_head > 4096 && m.quarantine_head * 2 > m.quarantine.size()) {
    m.quarantine.erase(m.quarantine.begin(), m.quarantine.begin() + m.quarantine_head);
    m.quarantine_head = 0;
  }
  return cudaSuccess;
}

enum class Side { host, device };

// Checks that [p, p + n) lies in one live allocation (device) or outside device memory (host).
void check_side(const void* p, size_t n, Side side, const char* call, const char* which) {
  Memory& m = memory();
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (side == Side::device) {
    const Allocation* al = m.live_at(a);
    if (n == 0 && m.live_at(a, true)) return;
    if (!al) {
      throw Error(std::string("cudasim: ") + call + ": the " + which + " " + describe_address(a) +
                  " should be device memory");
    }
    if (a + n > al->data + al->size) {
      throw Error(std::string("cudasim: ") + call + ": " + std::to_string(n) + " bytes from " +
                  hex(a) + " run " + std::to_string(a + n - al->data - al->size) +
                  " bytes past the end of " + describe_allocation(*al));
    }
  } else if (m.in_arena(a)) {
    throw Error(std::string("cudasim: ") + call + ": the " + which + " " + describe_address(a) +
                " is device memory but the copy kind says host");
  }
}

Side side_of(const void* p) {
  return memory().in_arena(reinterpret_cast<uintptr_t>(p)) ? Side::device : Side::host;
}

cudaError_t copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, const char* call) {
  std::lock_guard<std::recursive_mutex> lock(sim_mutex());
  if (n == 0) return cudaSuccess;
  Side ds, ss;
  switch (kind) {
    case cudaMemcpyHostToHost:
      ds = ss = Side::host;
      break;
    case cudaMemcpyHostToDevice:
      ds = Side::device, ss = Side::host;
      break;
    case cudaMemcpyDeviceToHost:
      ds = Side::host, ss = Side::device;
      break;
    case cudaMemcpyDeviceToDevice:
      ds = ss = Side::device;
      break;
    default:
      ds = side_of(dst), ss = side_of(src);
      break;
  }
  check_side(dst, n, ds, call, "destination");
  check_side(src, n, ss, call, "source");
  DeviceAccess access;
  std::memmove(dst, src, n);
  return cudaSuccess;
}

struct Handle {
  int kind;
};

}  // namespace

DeviceAccess::DeviceAccess() {
  sim_mutex().lock();
  was_open_ = memory().open;
  memory().set_open(true);
}
DeviceAccess::~DeviceAccess() {
  memory().set_open(was_open_);
  sim_mutex().unlock();
}

void check_device_range(const void* p, size_t bytes, const char* what) {
  std::lock_guard<std::recursive_mutex> lock(sim_mutex());
  check_side(p, bytes, Side::device, "cub::DeviceRadixSort", what);
}

}  // namespace cudasim

// ---- the CUDA runtime API calls mel makes
// -------------------------------------------------------------

using cudasim::Error;
using cudasim::g_last_error;

namespace {
cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) g_last_error = e;
  return e;
}
int g_device = 0;
}  // namespace

extern "C" {

cudaError_t cudaMalloc(void** p, size_t size) {
  std::lock_guard<std::recursive_mutex> lock(cudasim::sim_mutex());
  *p = nullptr;
  if (size == 0) return cudaSuccess;
  if (size > (size_t(16) << 30)) return record(cudaErrorMemoryAllocation);  // a 16 GiB device
  *p = cudasim::device_malloc(size);
  return *p ? cudaSuccess : record(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void* p) {
  std::lock_guard<std::recursive_mutex> lock(cudasim::sim_mutex());
  if (!p) return cudaSuccess;
  return cudasim::device_free(p);
}

cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int) {
  std::lock_guard<std::recursive_mutex> lock(cudasim::sim_mutex());
  *p = std::aligned_alloc(4096, (std::max<size_t>(size, 1) + 4095) / 4096 * 4096);
  if (!*p) return record(cudaErrorMemoryAllocation);
  cudasim::host_ranges().pinned[reinterpret_cast<uintptr_t>(*p)] = size;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** p, size_t size) {
  return cudaHostAlloc(p, size, 0);
}

cudaError_t cudaFreeHost(void* p) {
  std::lock_guard<std::recursive_mutex> lock(cudasim::sim_mutex());
  cudasim::host_ranges().pinned.erase(reinterpret_cast<uintptr_t>(p));
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  return cudasim::copy(dst, src, n, kind, "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t) {
  return cudasim::copy(dst, src, n, kind, "cudaMemcpyAsync");
}

cudaError_t cudaMemset(void* p, int value, size_t n) {
  std::lock_guard<std::recursive_mutex> lock(cudasim::sim_mutex());
  if (n == 0) return cudaSuccess;
  cudasim::check_side(p, n, cudasim::Side::device, "cudaMemset", "destination");
  cudasim::DeviceAccess access;
  std::memset(p, value, n);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t) {
  return cudaMemset(p, value, n);
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  return g_last_error;
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorMemoryAllocation:
      return "out of memory (simulated device)";
    case cudaErrorInvalidConfiguration:
      return "invalid launch configuration (simulated device)";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal (simulated device)";
    case cudaErrorInvalidValue:
      return "invalid argument (simulated device)";
    default:
      return "error (simulated device)";
  }
}

const char* cudaGetErrorName(cudaError_t e) {
  return cudaGetErrorString(e);
}

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int d) {
  if (d != 0) return record(cudaErrorInvalidDevice);
  g_device = d;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* d) {
  *d = g_device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int d) {
  if (d != 0) return record(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "mel kernel simulator (CPU)");
  prop->totalGlobalMem = size_t(16) << 30;
  prop->sharedMemPerBlock = cudasim::kSharedBytes;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 4;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int d) {
  if (d != 0) return record(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      break;
    case cudaDevAttrMultiProcessorCount:
      *value = 4;
      break;
    case cudaDevAttrWarpSize:
      *value = 32;
      break;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      break;
    default:
      *value = 0;
      break;
  }
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  std::lock_guard<std::recursive_mutex> lock(cudasim::sim_mutex());
  *total = size_t(16) << 30;
  *free_bytes = *total - std::min(*total, cudasim::memory().live_bytes);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  *s = reinterpret_cast<cudaStream_t>(new cudasim::Handle{1});
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  return cudaStreamCreateWithFlags(s, 0);
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<cudasim::Handle*>(s);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) {
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* status) {
  *status = cudaStreamCaptureStatusNone;  // graphs are not simulated
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) {
  *e = reinterpret_cast<cudaEvent_t>(new cudasim::Handle{2});
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  return cudaEventCreateWithFlags(e, 0);
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<cudasim::Handle*>(e);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) {
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t) {
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t) {
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.0f;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

}  // extern "C"
