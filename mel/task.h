// The MEL method as a training task: phase 1 trains the upstream models and heads under the fused
// joint loss (or a baseline's part of it), optional phase 2 fine-tunes the heads with the upstream
// models frozen; evaluation scores every exit and head.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/batch.h"
#include "mel/ensemble.h"
#include "mel/failout.h"
#include "mel/joint_loss.h"
#include "train/task.h"

namespace mel::method {

// joint: the MEL loss; independent: the exits alone, then the heads on frozen upstreams;
// combination_only: the heads alone (the exits get weight 0).
enum class Baseline { joint, independent, combination_only };
const char* baseline_name(Baseline b);

struct LossSpec {
  std::vector<double> size_weights;  // lambda by subset size, index 1..M (index 0 unused)
  double diversity_weight = 0.0, diversity_margin = 0.0;
  bool hierarchical = false;
  std::vector<int64_t> coarse_map;  // fine class -> coarse class (empty: the dataset's own)
  double label_smoothing = 0.0;
};

struct PhaseSpec {
  int64_t epochs = 0;
  train::OptimizerConfig optimizer;
  train::ScheduleConfig schedule;
};

struct MelSpec {
  LossSpec loss;
  Baseline baseline = Baseline::joint;
  PhaseSpec phase1;  // everything trains
  PhaseSpec phase2;  // the heads alone, upstream models frozen (epochs 0: none)
  int64_t batch_size = 0;
  Device device = Device::cpu();
  FailoutSpec failout;  // upstream servers failing during training (off by default)
};

// Coarse labels for a batch: the dataset's own, or the fine labels mapped by l.coarse_map;
// undefined when the loss is not hierarchical.
Tensor coarse_labels(const LossSpec& l, const data::Batch& b);
// Training mode for `phase` of a MEL task: everything, or (phase 2) the heads with the upstream
// models frozen in eval mode (their running statistics fixed).
void set_phase_mode(Ensemble& m, int phase);

// What a training or evaluation step optimises.
enum class LossPart { joint, exits_only, heads_only };
JointLossOptions loss_options(const MelSpec& spec, const Ensemble& m, LossPart part);

// What every MEL task shares: the ensemble, its spec and data, and evaluation's tally.
class EnsembleTask : public train::Task {
 public:
  // The model must already be on spec.device; `train` and `test` outlive the task.
  EnsembleTask(std::shared_ptr<Ensemble> model, MelSpec spec, data::BatchSource& train,
               data::BatchSource& test);
  nn::Module& model() override { return *model_; }
  std::vector<std::string> predictor_names() const override { return model_->predictor_names(); }
  data::BatchSource& train_data() override { return train_; }
  bool skips_parameters() const override { return spec_.failout.enabled(); }
  std::string describe() const override;

 protected:
  Tensor coarse_of(const data::Batch& b) const { return coarse_labels(spec_.loss, b); }
  // Evaluation: each test batch's every exit and head logits (in predictor order) go to add(),
  // finish() gives the mean joint loss, the accuracies and (in `combined`, for M <= 8) the
  // accuracy of every set of two or more exits whose probabilities a client averages.
  class Tally {
   public:
    explicit Tally(const EnsembleTask& task);
    void add(const std::vector<Tensor>& logits, const data::Batch& b);
    train::Evaluation finish();

   private:
    const EnsembleTask& task_;
    JointLossOptions loss_;
    train::Evaluation e_;
    std::vector<int64_t> correct_;
    std::vector<std::vector<int>> exit_sets_;
    std::vector<int64_t> averaged_correct_;  // per exit set
    std::vector<double> loss_sums_;          // per predictor, summed over samples
    std::vector<double> averaged_loss_;      // per exit set, summed over samples
    double loss_sum_ = 0.0;
    int64_t batches_ = 0;
  };

  std::shared_ptr<Ensemble> model_;
  MelSpec spec_;
  data::BatchSource& train_;
  data::BatchSource& test_;
};

class MelTask : public EnsembleTask {
 public:
  MelTask(std::shared_ptr<Ensemble> model, MelSpec spec, data::BatchSource& train,
          data::BatchSource& test);
  std::vector<train::Phase> phases() override;
  void begin_epoch(int phase) override;
  void begin_step(int phase, int64_t step) override;
  train::StepOutput train_step(const data::Batch& batch, int phase) override;
  train::Evaluation evaluate() override;

 private:
  train::StepOutput failout_step(const data::Batch& b, int phase);

  std::vector<JointLossOptions> phase_loss_;  // per phase
  std::vector<bool> up_;                      // with failout: the servers up this step
};

}  // namespace mel::method
