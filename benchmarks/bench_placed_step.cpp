// A placed training step against the one-process step, on the CPU: the reference ensemble
// (configs/fmnist_mel2.json, or the config given) on random batches of 256, trained for a few
// steps in one process (MelTask) and placed on M + 1 in-process ranks (PlacedMelTask, threads of
// this process). Prints ms per step for both and, per rank of the placed run, the time in compute,
// sending and waiting, and the bytes sent per step: the communication a placed step adds.
//
//   bench_placed_step [CONFIG] [--steps N]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "app/ensemble_config.h"
#include "core/factory.h"
#include "core/json_reader.h"
#include "core/random.h"
#include "data/tensor_loader.h"
#include "dist/inprocess.h"
#include "mel/placed.h"
#include "mel/task.h"
#include "train/config.h"

namespace {

using namespace mel;
using Clock = std::chrono::steady_clock;

struct Run {
  std::shared_ptr<method::Ensemble> model;
  std::unique_ptr<data::TensorLoader> data;
};

Run make(const app::MelConfig& c, int64_t batches) {
  Run r;
  r.model = app::build_ensemble_model(c);
  Generator g(0);
  r.model->reset_parameters(g);
  const int64_t n = batches * c.train.batch_size;
  r.data = std::make_unique<data::TensorLoader>(randn({n, 1, 28, 28}, g), randint(0, 10, {n}, g),
                                                c.train.batch_size, false);
  return r;
}

// Median seconds per step of `task` over `steps` steps after 2 warm-up steps.
double train_steps(train::Task& task, int steps, const std::function<void()>& sync) {
  const train::Phase phase = task.phases()[0];
  nn::FlatParameters flat(*phase.trainable);
  auto opt = train::make_optimizer(phase.optimizer, flat);
  data::BatchSource& src = task.train_data();
  task.begin_epoch(0);
  std::vector<double> times;
  for (int s = 0; s < steps + 2; ++s) {
    data::Batch b;
    if (!src.next(b)) {
      src.start_epoch(0);
      src.next(b);
    }
    sync();
    const auto t0 = Clock::now();
    opt->zero_grad();
    task.begin_step(0, s);
    train::StepOutput out = task.train_step(b, 0);
    if (out.loss.requires_grad()) out.loss.backward();
    opt->step(1e-3);
    if (s >= 2) times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = std::string(MEL_SOURCE_DIR) + "/configs/fmnist_mel2.json";
  int steps = 20;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
    } else {
      config = argv[i];
    }
  }
  try {
    const app::MelConfig c =
        app::parse_mel_config(read_json_file(config), config, app::RunOverrides{});
    const int M = app::build_ensemble_model(c)->spec.M;
    const int64_t B = c.train.batch_size;
    Run one = make(c, 4);
    method::MelTask single(one.model, app::mel_spec(c, Device::cpu()), *one.data, *one.data);
    const double t_single = train_steps(single, steps, [] {});

    std::vector<method::PlacedStats> stats(static_cast<size_t>(M + 1));
    double t_placed = 0;
    dist::run_ranks(M + 1, [&](dist::Communicator& comm) {
      Run r = make(c, 4);
      method::PlacedMelTask task(r.model, app::mel_spec(c, Device::cpu()), *r.data, *r.data, comm);
      const double t = train_steps(task, steps, [&] { comm.barrier(); });
      stats[static_cast<size_t>(comm.rank())] = task.stats();
      if (comm.rank() == M) t_placed = t;
    });
    fmt::print("{}: batch {}, {} steps (median ms per step)\n", c.name, B, steps);
    fmt::print("one process        {:8.1f} ms\n", t_single * 1e3);
    fmt::print("placed on {} ranks  {:8.1f} ms  ({:.2f}x)\n", M + 1, t_placed * 1e3,
               t_placed / t_single);
    fmt::print("{:<12} {:>12} {:>12} {:>12} {:>14}\n", "rank", "compute ms", "send ms", "wait ms",
               "KiB sent");
    const double n = steps + 2;  // the statistics include the warm-up steps
    for (int r = 0; r <= M; ++r) {
      const auto& s = stats[static_cast<size_t>(r)];
      fmt::print("{:<12} {:>12.1f} {:>12.1f} {:>12.1f} {:>14.0f}\n",
                 r < M ? fmt::format("upstream {}", r + 1) : std::string("C"),
                 1e3 * s.compute_seconds / n, 1e3 * s.send_seconds / n, 1e3 * s.wait_seconds / n,
                 s.bytes_sent / n / 1024);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_placed_step: {}\n", e.what());
    return 1;
  }
  return 0;
}
