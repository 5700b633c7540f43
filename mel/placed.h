// MEL placed on its servers for training: rank i < M trains upstream model i, rank M (the
// combination server C) trains the heads. Per step each upstream sends its features (the tensor
// that crosses the network at inference) and its exit's logits to C; C computes every head and
// the whole fused joint loss and returns the gradients of each upstream's features and exit
// logits; each upstream back-propagates them through its model and steps. The result equals
// single-process training bit for bit on the CPU backends.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "mel/task.h"

namespace mel::method {

// What a placed rank measured (seconds and bytes), for the report.
struct PlacedStats {
  double compute_seconds = 0, send_seconds = 0, wait_seconds = 0;
  double reduce_seconds = 0;  // all-reduces among replicas (gradients, metrics)
  double bytes_sent = 0, samples = 0;
  double communication() const { return send_seconds + wait_seconds + reduce_seconds; }
};

class PlacedMelTask : public EnsembleTask {
 public:
  // Every rank builds the whole ensemble (the same initial weights from the same seed) and trains
  // its part; `comm` has M + 1 ranks (an error otherwise). The model must be on spec.device;
  // tensors on a GPU are staged through the host when `comm` moves CPU tensors.
  //
  // Data parallelism: with `replicas` (the communicator of this server's R replicas, one per
  // copy of the whole placement), replica r trains on its share of every batch (rows r*B/R to
  // (r+1)*B/R) and the replicas' gradients are averaged, weighted by their rows, before each
  // step; replica 0 evaluates, gathers and writes the run folder.
  //
  // On GPUs, `gpu` and `replicas_gpu` (NCCL communicators over the same ranks as `comm` and
  // `replicas`) carry the step's tensors and the gradients on the device; `comm` and `replicas`
  // keep the small host-side exchanges (statistics, checkpoint gathering).
  PlacedMelTask(std::shared_ptr<Ensemble> model, MelSpec spec, data::BatchSource& train,
                data::BatchSource& test, dist::Communicator& comm,
                dist::Communicator* replicas = nullptr, dist::Communicator* gpu = nullptr,
                dist::Communicator* replicas_gpu = nullptr);

  std::vector<train::Phase> phases() override;
  void begin_epoch(int phase) override;
  void begin_step(int phase, int64_t step) override;
  train::StepOutput train_step(const data::Batch& batch, int phase) override;
  train::Evaluation evaluate() override;
  std::string describe() const override;

  bool spans_ranks() const override { return true; }
  bool writes_run_folder() const override { return combiner() && replica() == 0; }
  void reduce_gradients(nn::FlatParameters& flat) override;
  double reduce_squared_norm(double local) override;
  void gather_model() override;
  nn::NamedTensors gather_optimizer_state(const nn::Optimizer& local) override;
  nn::NamedTensors local_optimizer_state(const nn::Optimizer& local,
                                         const nn::NamedTensors& stored) override;

  // The backend that carries the step's tensors ("nccl", or the host communicator's).
  std::string step_backend() const { return data_.backend(); }
  // This rank's statistics so far.
  const PlacedStats& stats() const { return stats_; }
  // On C after the last evaluation: every rank's statistics, by rank (of replica 0).
  const std::vector<PlacedStats>& rank_stats() const { return rank_stats_; }
  // Bytes per sample that cross from upstream i to C at inference (its features).
  int64_t feature_bytes_per_sample(int i) const;

 private:
  bool combiner() const { return comm_.rank() == model_->spec.M; }
  int replica() const { return replicas_ ? replicas_->rank() : 0; }
  int num_replicas() const { return replicas_ ? replicas_->size() : 1; }
  data::Batch shard_of(const data::Batch& b);
  void reduce_metrics(train::StepOutput& out);
  void send(const Tensor& t, int dst);
  Tensor recv(const Shape& shape, int src);
  struct Received {
    std::vector<Tensor> features, exits;  // per upstream; undefined for one that is down
  };
  Received receive_outputs(int64_t batch, bool with_grad);
  bool is_up(int i) const;
  train::StepOutput upstream_step(const data::Batch& b, int phase);
  train::StepOutput combiner_step(const data::Batch& b, int phase);
  void exchange_stats();

  dist::Communicator& comm_;
  dist::Communicator* replicas_;
  dist::Communicator& data_;                 // features and their gradients
  dist::Communicator* replicas_data_;        // gradient all-reduce
  int64_t shard_rows_ = 0, batch_rows_ = 0;  // of the last step
  std::vector<JointLossOptions> loss_;       // per phase, as one process computes it
  std::shared_ptr<nn::Module> nothing_;      // what a frozen rank trains
  std::vector<bool> up_;                     // with failout: the upstreams up this step
  PlacedStats stats_;
  std::vector<PlacedStats> rank_stats_;
};

}  // namespace mel::method
