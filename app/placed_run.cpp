#include "app/placed_run.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>

#include "app/ensemble_run.h"
#include "app/text_run.h"
#include "core/factory.h"
#include "core/random.h"
#include "dist/inprocess.h"
#include "dist/mpi.h"
#include "dist/nccl.h"
#include "mel/placed.h"
#include "train/device.h"
#include "train/trainer.h"

namespace mel::app {

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Every rank must train the same config with the same build: a mismatch names the ranks.
void check_same_run(dist::Communicator& comm, const MelConfig& c) {
  const int64_t mine = static_cast<int64_t>(fnv1a(c.json.dump() + "|" + __DATE__ + __TIME__) >> 1);
  const Tensor all = comm.all_gather(tensor_i64({mine}, {1}));
  std::vector<int> differ;
  for (int r = 0; r < comm.size(); ++r) {
    if (all.data<int64_t>()[r] != all.data<int64_t>()[0]) differ.push_back(r);
  }
  MEL_CHECK(differ.empty(),
            "placed training: rank(s) {} run another config or another mel build than rank 0 "
            "(every rank must start with the same config, overrides and binary)",
            fmt::join(differ, ", "));
}

// The GPU of this rank: threads share the one asked for; each process on a node takes the GPU of
// its local rank, and a node with fewer GPUs than processes is an error.
Device rank_device(const RunOverrides& ov, const std::string& placement) {
  Device d = train::run_device(ov.device, "mel train");
  if (d.is_cuda() && placement == "servers") {
    auto env = [](const char* a, const char* b) {
      const char* v = std::getenv(a);
      if (!v) v = std::getenv(b);
      return v ? std::atoi(v) : -1;
    };
    const int local = env("OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID");
    const int local_size = env("OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE");
    const int gpus = cuda_device_count();
    MEL_CHECK(local_size <= gpus,
              "mel train --placement servers --device cuda: {} processes on this node but {} "
              "GPU(s); start at most one process per GPU",
              local_size, gpus);
    if (local >= 0) d = Device::cuda(local);
    check_device_available(d);
  }
  return d;
}

Json placement_json(const method::PlacedMelTask& task, const method::Ensemble& m,
                    const dist::Communicator& comm, const Placement& placement) {
  Json features = Json::object();
  for (int i = 0; i < m.spec.M; ++i)
    features[std::to_string(i + 1)] = task.feature_bytes_per_sample(i);
  Json ranks = Json::array();
  const auto& stats = task.rank_stats();
  for (size_t r = 0; r < stats.size(); ++r) {
    const auto& s = stats[r];
    ranks.push_back({{"rank", r},
                     {"role", static_cast<int>(r) < m.spec.M ? fmt::format("upstream {}", r + 1)
                                                             : std::string("C")},
                     {"compute_seconds", s.compute_seconds},
                     {"send_seconds", s.send_seconds},
                     {"wait_seconds", s.wait_seconds},
                     {"reduce_seconds", s.reduce_seconds},
                     {"bytes_sent", s.bytes_sent}});
  }
  return {{"placement", placement.kind},
          {"backend", comm.backend()},
          {"step_backend", task.step_backend()},
          {"ranks", comm.size() * placement.replicas},
          {"replicas", placement.replicas},
          {"feature_bytes_per_sample", features},
          {"per_rank", ranks}};
}

// World rank w is server w % (M + 1) of replica w / (M + 1): a replica's servers are neighbours
// (on one node, when a node holds a replica), the replicas of a server are M + 1 apart.
Json run_rank(const MelConfig& c, const RunOverrides& ov, const std::string& resume_dir,
              const Placement& placement, int servers, dist::Communicator& world,
              std::chrono::milliseconds timeout) {
  check_same_run(world, c);
  MEL_CHECK(world.size() == servers * placement.replicas,
            "placed training of {} servers x {} replicas needs {} ranks, but the {} world has {}",
            servers, placement.replicas, servers * placement.replicas, world.backend(),
            world.size());
  const int replica = world.rank() / servers, server = world.rank() % servers;
  std::unique_ptr<dist::Communicator> own_replica = world.split(replica, server);
  // An upstream's wait for C includes C's wait for the other upstreams: twice as long, so that
  // when a rank hangs, the rank waiting for it directly reports it first.
  if (server < servers - 1) own_replica->set_timeout(2 * timeout);
  std::unique_ptr<dist::Communicator> same_server = world.split(server, replica);
  const Device device = rank_device(ov, placement.kind);
  const TrainConfig& tc = c.train;
  // Every rank reads the data: the upstreams their inputs, C the labels.
  const auto data = open_run_sources(c);
  auto model = build_ensemble_model(c);
  Generator gen(tc.seed);
  model->reset_parameters(gen);
  model->to(device);
  // On GPUs of separate processes the step's tensors and gradients go device to device.
  std::unique_ptr<dist::Communicator> gpu, replicas_gpu;
  if (device.is_cuda() && placement.kind == "servers" && placement.gpu_comm == "nccl") {
    MEL_CHECK(dist::nccl_built(),
              "mel train --device cuda --placement servers: this build has no "
              "NCCL; use --gpu-comm host");
    gpu = dist::nccl_communicator(*own_replica, device);
    if (placement.replicas > 1) replicas_gpu = dist::nccl_communicator(*same_server, device);
  }
  method::PlacedMelTask task(model, mel_spec(c, device), data->train(), data->test(), *own_replica,
                             same_server.get(), gpu.get(), replicas_gpu.get());
  const train::TrainerHooks hooks = ensemble_hooks(model, c, [&](Json& report) {
    report["placement"] = placement_json(task, *model, *own_replica, placement);
  });
  return train::Trainer(task, run_options(c.name, c.json, device, tc, ov, resume_dir), hooks).run();
}

}  // namespace

Json train_mel_placed(const MelConfig& c, const RunOverrides& ov, const std::string& resume_dir,
                      const Placement& placement) {
  MEL_CHECK(placement.replicas >= 1, "mel train: --replicas must be >= 1, got {}",
            placement.replicas);
  MEL_CHECK(placement.gpu_comm == "nccl" || placement.gpu_comm == "host",
            "mel train: --gpu-comm must be nccl or host, got '{}'", placement.gpu_comm);
  MEL_CHECK(placement.timeout_seconds > 0, "mel train: --comm-timeout must be positive, got {}",
            placement.timeout_seconds);
  const int servers = build_ensemble_model(c)->spec.M + 1;
  const int ranks = servers * placement.replicas;
  const auto timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::ceil(placement.timeout_seconds * 1000.0)));
  if (placement.kind == "servers") {
    MEL_CHECK(dist::mpi_built(),
              "mel train --placement servers: this build has no MPI backend "
              "(install libopenmpi-dev and rebuild)");
    MEL_CHECK(dist::launched_by_mpi(),
              "mel train --placement servers: start one process per server with mpirun -np {} mel "
              "train ... (or srun), or use --placement threads",
              ranks);
    auto world = dist::mpi_world(timeout);
    return run_rank(c, ov, resume_dir, placement, servers, *world, timeout);
  }
  MEL_CHECK(placement.kind == "threads",
            "mel train: --placement must be single, threads or servers, got '{}'", placement.kind);
  Json report;
  dist::run_ranks(
      ranks,
      [&](dist::Communicator& comm) {
        Json r = run_rank(c, ov, resume_dir, placement, servers, comm, timeout);
        if (!r.is_null() && !r.empty()) report = std::move(r);
      },
      timeout);
  return report;
}

}  // namespace mel::app
