#include "dist/inprocess.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "core/autograd.h"
#include "core/factory.h"
#include "core/ops_elementwise.h"
#include "dist/payload.h"

namespace mel::dist {

struct Message {
  DType dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
};

// Shared by the ranks of one group: mailboxes per (source, destination), the slots of collective
// rounds (every rank numbers its collectives the same way, since all ranks call them in the same
// order), the groups split off it, and the first failure.
class InProcessWorld {
 public:
  InProcessWorld(int size, std::chrono::milliseconds timeout) : size_(size), timeout_(timeout) {}
  int size() const { return size_; }

  void post(int src, int dst, Message m) {
    std::lock_guard<std::mutex> lock(mu_);
    mail_[{src, dst}].push_back(std::move(m));
    cv_.notify_all();
  }

  Message take(int src, int dst) {
    std::unique_lock<std::mutex> lock(mu_);
    auto& box = mail_[{src, dst}];
    wait(
        lock, [&] { return !box.empty(); }, dst, src, "recv");
    Message m = std::move(box.front());
    box.pop_front();
    return m;
  }

  // Every rank's `mine` for collective `round`, by rank.
  std::vector<std::vector<uint8_t>> exchange(int rank, uint64_t round, std::vector<uint8_t> mine,
                                             const char* op) {
    auto own = std::make_shared<const std::vector<uint8_t>>(std::move(mine));
    std::unique_lock<std::mutex> lock(mu_);
    Round& r = rounds_[round];
    r.slots.resize(static_cast<size_t>(size_));
    r.slots[static_cast<size_t>(rank)] = std::move(own);
    cv_.notify_all();
    auto missing = [&]() {
      for (int i = 0; i < size_; ++i) {
        if (!r.slots[static_cast<size_t>(i)]) return i;
      }
      return -1;
    };
    wait(
        lock, [&] { return missing() < 0; }, rank, -1, op, missing);
    // Copy outside the lock: the ranks copy in parallel, and nobody waits on a large copy.
    const std::vector<std::shared_ptr<const std::vector<uint8_t>>> slots = r.slots;
    if (++r.taken == size_) rounds_.erase(round);
    lock.unlock();
    std::vector<std::vector<uint8_t>> all;
    all.reserve(slots.size());
    for (const auto& s : slots) all.push_back(*s);
    return all;
  }

  // The group of `color` split off in `round` (created by its first member to get here).
  std::shared_ptr<InProcessWorld> group(uint64_t round, int color, int group_size) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& g = groups_[{round, color}];
    if (!g) g = std::make_shared<InProcessWorld>(group_size, timeout_);
    return g;
  }

  int first_failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_rank_;
  }

  void fail(int rank, const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_rank_ < 0) {
      failed_rank_ = rank;
      failure_ = what;
    }
    cv_.notify_all();
    for (auto& [key, g] : groups_) g->fail(rank, what);
  }

 private:
  struct Round {
    std::vector<std::shared_ptr<const std::vector<uint8_t>>> slots;  // null: not arrived yet
    int taken = 0;
  };

  template <class Pred>
  void wait(std::unique_lock<std::mutex>& lock, Pred ready, int me, int other, const char* op,
            const std::function<int()>& who = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (!ready()) {
      if (failed_rank_ >= 0 && failed_rank_ != me) {
        fail_now("rank {}: {}: rank {} failed: {}", me, op, failed_rank_, failure_);
      }
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && !ready()) {
        const int late = who ? who() : other;
        fail_now("rank {}: {}: no answer from rank {} within {} s (did it fail or hang?)", me, op,
                 late, std::chrono::duration_cast<std::chrono::seconds>(timeout_).count());
      }
    }
  }

  template <class... Args>
  [[noreturn]] static void fail_now(fmt::format_string<Args...> f, Args&&... args) {
    throw Error(fmt::format(f, std::forward<Args>(args)...));
  }

  int size_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<int, int>, std::deque<Message>> mail_;
  std::map<uint64_t, Round> rounds_;
  std::map<std::pair<uint64_t, int>, std::shared_ptr<InProcessWorld>> groups_;
  int failed_rank_ = -1;
  std::string failure_;
};

namespace {

class InProcessCommunicator : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<InProcessWorld> world, int rank)
      : world_(std::move(world)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return world_->size(); }
  std::string backend() const override { return "inprocess"; }

  void send(const Tensor& t, int dst) override {
    check_tensor(*this, t, "send");
    check_peer(dst, "send");
    world_->post(rank_, dst, {t.dtype(), t.shape(), to_bytes(t)});
  }

  void recv(Tensor& t, int src) override {
    check_tensor(*this, t, "recv");
    check_peer(src, "recv");
    Message m = world_->take(src, rank_);
    check_match("recv", src, m.dtype, m.shape, t);
    from_bytes(m.bytes, t);
  }

  void all_reduce_sum(Tensor& t) override {
    check_tensor(*this, t, "all_reduce_sum");
    reduce_gathered(*this, gather_bytes(t, "all_reduce_sum"), t);
  }

  void broadcast(Tensor& t, int root) override {
    check_tensor(*this, t, "broadcast");
    MEL_CHECK(root >= 0 && root < size(), "broadcast: root {} is not a rank (0..{})", root,
              size() - 1);
    auto all =
        world_->exchange(rank_, next_round(), rank_ == root ? to_bytes(t) : Bytes{}, "broadcast");
    check_bytes(all[static_cast<size_t>(root)].size(), t, root, "broadcast");
    from_bytes(all[static_cast<size_t>(root)], t);
  }

  Tensor all_gather(const Tensor& t) override {
    check_tensor(*this, t, "all_gather");
    return stack_gathered(gather_bytes(t, "all_gather"), t);
  }

  void barrier() override { world_->exchange(rank_, next_round(), {}, "barrier"); }

  std::unique_ptr<Communicator> split(int color, int key) override {
    const uint64_t round = next_round();
    const auto all = world_->exchange(rank_, round, encode_ints({color, key}), "split");
    const SplitGroup g = split_group(all, rank_, color);
    return std::make_unique<InProcessCommunicator>(world_->group(round, color, g.size), g.rank);
  }

 private:
  uint64_t next_round() { return round_++; }

  std::vector<Bytes> gather_bytes(const Tensor& t, const char* op) {
    auto all = world_->exchange(rank_, next_round(), to_bytes(t), op);
    for (size_t i = 0; i < all.size(); ++i) check_bytes(all[i].size(), t, static_cast<int>(i), op);
    return all;
  }

  void check_peer(int peer, const char* op) const {
    MEL_CHECK(peer >= 0 && peer < size() && peer != rank_,
              "{}: rank {} cannot talk to rank {} (ranks 0..{}, not itself)", op, rank_, peer,
              size() - 1);
  }

  std::shared_ptr<InProcessWorld> world_;
  int rank_;
  uint64_t round_ = 0;
};

}  // namespace

std::shared_ptr<InProcessWorld> make_inprocess_world(int size, std::chrono::milliseconds timeout) {
  MEL_CHECK(size >= 1, "in-process world: size must be >= 1, got {}", size);
  return std::make_shared<InProcessWorld>(size, timeout);
}

std::unique_ptr<Communicator> inprocess_communicator(const std::shared_ptr<InProcessWorld>& world,
                                                     int rank) {
  MEL_CHECK(rank >= 0 && rank < world->size(), "in-process world of {} ranks has no rank {}",
            world->size(), rank);
  return std::make_unique<InProcessCommunicator>(world, rank);
}

void run_ranks(int size, const std::function<void(Communicator&)>& fn,
               std::chrono::milliseconds timeout) {
  auto world = make_inprocess_world(size, timeout);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto comm = inprocess_communicator(world, r);
        fn(*comm);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = std::current_exception();
        world->fail(r, e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  // The rank that failed first (the others failed because it did).
  const int first = world->first_failure();
  if (first >= 0) std::rethrow_exception(errors[static_cast<size_t>(first)]);
}

}  // namespace mel::dist
