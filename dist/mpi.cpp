#include "dist/mpi.h"

#include <cstdlib>

#include "core/error.h"

#ifdef MEL_HAVE_MPI
#include <mpi.h>

#include <climits>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include "core/factory.h"
#include "dist/payload.h"
#endif

namespace mel::dist {

bool mpi_built() {
#ifdef MEL_HAVE_MPI
  return true;
#else
  return false;
#endif
}

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"}) {
    if (std::getenv(v)) return true;
  }
  return false;
}

#ifndef MEL_HAVE_MPI

std::unique_ptr<Communicator> mpi_world(std::chrono::milliseconds) {
  fail("mpi: this build has no MPI backend (install libopenmpi-dev and reconfigure)");
}

void abort_job(int) {}

#else

namespace {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("mpi: {} failed: {}", call, std::string(text, static_cast<size_t>(len)));
}

void ensure_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) return;
    int provided = 0;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided),
              "MPI_Init_thread");
    std::atexit([] {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Finalize();
    });
  });
}

// Messages carry the dtype and a hash of the shape in their tag, so a receive can tell a mismatch
// from the tag before reading the bytes.
int tag_of(DType dtype, const Shape& shape) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t d : shape) h = (h ^ static_cast<uint64_t>(d)) * 1099511628211ull;
  return static_cast<int>(dtype) + 8 * static_cast<int>(h % 4000);
}

int checked_count(size_t bytes, const char* op) {
  MEL_CHECK(bytes <= static_cast<size_t>(INT_MAX),
            "mpi {}: {} bytes do not fit one MPI message (at most {})", op, bytes, INT_MAX);
  return static_cast<int>(bytes);
}

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, bool owned, std::chrono::milliseconds timeout)
      : comm_(comm), owned_(owned), timeout_(timeout) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void set_timeout(std::chrono::milliseconds timeout) override { timeout_ = timeout; }

  void send(const Tensor& t, int dst) override {
    check_tensor(*this, t, "send");
    check_peer(dst, "send");
    const Bytes b = to_bytes(t);
    MPI_Request req;
    check_mpi(MPI_Isend(b.data(), checked_count(b.size(), "send"), MPI_BYTE, dst,
                        tag_of(t.dtype(), t.shape()), comm_, &req),
              "MPI_Isend");
    wait(req, [&] { return fmt::format("send: rank {} took no message", dst); });
  }

  void recv(Tensor& t, int src) override {
    check_tensor(*this, t, "recv");
    check_peer(src, "recv");
    MPI_Status status = probe(src);
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    Bytes b(static_cast<size_t>(count));
    check_mpi(MPI_Recv(b.data(), count, MPI_BYTE, src, status.MPI_TAG, comm_, MPI_STATUS_IGNORE),
              "MPI_Recv");
    if (status.MPI_TAG != tag_of(t.dtype(), t.shape()) || b.size() != t.nbytes()) {
      fail(
          "recv: rank {} sent a {} message of {} bytes (another shape or dtype) but the "
          "receiving tensor is {} ({} bytes)",
          src, dtype_name(static_cast<DType>(status.MPI_TAG % 8)), b.size(),
          describe(t.dtype(), t.shape()), t.nbytes());
    }
    from_bytes(b, t);
  }

  void all_reduce_sum(Tensor& t) override {
    check_tensor(*this, t, "all_reduce_sum");
    reduce_gathered(*this, gather_bytes(t, "all_reduce_sum"), t);
  }

  void broadcast(Tensor& t, int root) override {
    check_tensor(*this, t, "broadcast");
    MEL_CHECK(root >= 0 && root < size_, "broadcast: root {} is not a rank (0..{})", root,
              size_ - 1);
    const auto all = exchange(rank_ == root ? to_bytes(t) : Bytes{});
    check_bytes(all[static_cast<size_t>(root)].size(), t, root, "broadcast");
    from_bytes(all[static_cast<size_t>(root)], t);
  }

  Tensor all_gather(const Tensor& t) override {
    check_tensor(*this, t, "all_gather");
    return stack_gathered(gather_bytes(t, "all_gather"), t);
  }

  void barrier() override {
    MPI_Request req;
    check_mpi(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
    wait(req, [] { return std::string("barrier: not every rank arrived"); });
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm sub;
    check_mpi(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
    return std::make_unique<MpiCommunicator>(sub, true, timeout_);
  }

 private:
  void check_peer(int peer, const char* op) const {
    MEL_CHECK(peer >= 0 && peer < size_ && peer != rank_,
              "{}: rank {} cannot talk to rank {} (ranks 0..{}, not itself)", op, rank_, peer,
              size_ - 1);
  }

  // Completes `req` without blocking inside MPI, so that a peer that stopped answering becomes an
  // error (what() says what was waited for) after the timeout instead of a hang.
  template <class What>
  void wait(MPI_Request& req, What&& what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    auto pause = std::chrono::microseconds(1);
    for (;;) {
      int done = 0;
      check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
      if (done) return;
      if (std::chrono::steady_clock::now() > deadline) {
        fail("rank {}: {} within {} s (did it fail or hang?)", rank_, what(),
             std::chrono::duration_cast<std::chrono::seconds>(timeout_).count());
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

  // Waits for a message from `src` without blocking inside MPI, so that a silent peer becomes an
  // error after the timeout instead of a hang.
  MPI_Status probe(int src) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    auto pause = std::chrono::microseconds(1);
    MPI_Status status;
    for (;;) {
      int flag = 0;
      check_mpi(MPI_Iprobe(src, MPI_ANY_TAG, comm_, &flag, &status), "MPI_Iprobe");
      if (flag) return status;
      if (std::chrono::steady_clock::now() > deadline) {
        fail("rank {}: recv: no message from rank {} within {} s (did it fail or hang?)", rank_,
             src, std::chrono::duration_cast<std::chrono::seconds>(timeout_).count());
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

  // Every rank's bytes, by rank: the sizes first, then the bytes themselves.
  std::vector<Bytes> exchange(const Bytes& mine) {
    std::vector<int64_t> sizes(static_cast<size_t>(size_));
    const int64_t n = static_cast<int64_t>(mine.size());
    MPI_Request req;
    check_mpi(MPI_Iallgather(&n, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, comm_, &req),
              "MPI_Iallgather");
    wait(req, [] { return std::string("collective: not every rank took part"); });
    std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
    size_t total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[static_cast<size_t>(r)] = checked_count(total, "collective");
      counts[static_cast<size_t>(r)] = checked_count(static_cast<size_t>(sizes[r]), "collective");
      total += static_cast<size_t>(sizes[r]);
    }
    Bytes flat(total);
    check_mpi(MPI_Iallgatherv(mine.data(), static_cast<int>(mine.size()), MPI_BYTE, flat.data(),
                              counts.data(), displs.data(), MPI_BYTE, comm_, &req),
              "MPI_Iallgatherv");
    wait(req, [] { return std::string("collective: not every rank took part"); });
    std::vector<Bytes> all;
    for (int r = 0; r < size_; ++r) {
      const auto* p = flat.data() + displs[static_cast<size_t>(r)];
      all.emplace_back(p, p + counts[static_cast<size_t>(r)]);
    }
    return all;
  }

  std::vector<Bytes> gather_bytes(const Tensor& t, const char* op) {
    auto all = exchange(to_bytes(t));
    for (size_t i = 0; i < all.size(); ++i) check_bytes(all[i].size(), t, static_cast<int>(i), op);
    return all;
  }

  MPI_Comm comm_;
  bool owned_;
  std::chrono::milliseconds timeout_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> mpi_world(std::chrono::milliseconds timeout) {
  ensure_init();
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, false, timeout);
}

void abort_job(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
}

#endif  // MEL_HAVE_MPI

}  // namespace mel::dist
