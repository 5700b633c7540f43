#include "app/placed_run.h"

#include <fmt/format.h>

#include <cstdlib>

#include "app/ensemble_run.h"
#include "core/factory.h"
#include "core/random.h"
#include "dist/inprocess.h"
#include "dist/mpi.h"
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

// The GPU of this rank: threads share the one asked for; processes on one node take their local
// rank's (modulo the GPUs present).
Device rank_device(const RunOverrides& ov, const std::string& placement) {
  Device d = train::run_device(ov.device, "mel train");
  if (d.is_cuda() && placement == "servers") {
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (!local) local = std::getenv("SLURM_LOCALID");
    if (local) d = Device::cuda(std::atoi(local) % std::max(1, cuda_device_count()));
    check_device_available(d);
  }
  return d;
}

Json placement_json(const method::PlacedMelTask& task, const method::Ensemble& m,
                    const dist::Communicator& comm, const std::string& placement) {
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
                     {"bytes_sent", s.bytes_sent}});
  }
  return {{"placement", placement},
          {"backend", comm.backend()},
          {"ranks", comm.size()},
          {"feature_bytes_per_sample", features},
          {"per_rank", ranks}};
}

Json run_rank(const MelConfig& c, const RunOverrides& ov, const std::string& resume_dir,
              const std::string& placement, dist::Communicator& comm) {
  check_same_run(comm, c);
  const Device device = rank_device(ov, placement);
  const TrainConfig& tc = c.train;
  const RunData ds = load_run_data(c.data);
  auto model = build_ensemble_model(c);
  Generator gen(tc.seed);
  model->reset_parameters(gen);
  model->to(device);
  const RunLoaders loaders = make_loaders(ds, c.data, tc);
  method::PlacedMelTask task(model, mel_spec(c, device), *loaders.train, *loaders.test, comm);
  const train::TrainerHooks hooks = ensemble_hooks(model, c, [&](Json& report) {
    report["placement"] = placement_json(task, *model, comm, placement);
  });
  return train::Trainer(task, run_options(c.name, c.json, device, tc, ov, resume_dir), hooks).run();
}

}  // namespace

Json train_mel_placed(const MelConfig& c, const RunOverrides& ov, const std::string& resume_dir,
                      const std::string& placement) {
  const int ranks = build_ensemble_model(c)->spec.M + 1;
  if (placement == "servers") {
    MEL_CHECK(dist::mpi_built(),
              "mel train --placement servers: this build has no MPI backend "
              "(install libopenmpi-dev and rebuild)");
    MEL_CHECK(dist::launched_by_mpi(),
              "mel train --placement servers: start one process per server with mpirun -np {} mel "
              "train ... (or srun), or use --placement threads",
              ranks);
    auto world = dist::mpi_world();
    return run_rank(c, ov, resume_dir, placement, *world);
  }
  MEL_CHECK(placement == "threads",
            "mel train: --placement must be single, threads or servers, "
            "got '{}'",
            placement);
  Json report;
  dist::run_ranks(ranks, [&](dist::Communicator& comm) {
    Json r = run_rank(c, ov, resume_dir, placement, comm);
    if (comm.rank() == ranks - 1) report = std::move(r);
  });
  return report;
}

}  // namespace mel::app
