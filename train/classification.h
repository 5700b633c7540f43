// The stock task for a single classifier: cross-entropy training, accuracy and mean loss on the
// test split. Any module mapping a batch to [B, classes] logits fits; Classifier is the usual one.
#pragma once
#include <memory>
#include <string>

#include "core/ops_nn.h"
#include "data/batch.h"
#include "nn/layers.h"
#include "train/task.h"

namespace mel::train {

// A trunk (feature extractor) followed by a head (classifier): parameters "trunk.N.*", "head.N.*".
class Classifier : public nn::Module {
 public:
  Classifier(std::shared_ptr<nn::Sequential> trunk, std::shared_ptr<nn::Sequential> head);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<nn::Sequential> trunk, head;
};

struct ClassificationSpec {
  int64_t epochs = 1;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  double label_smoothing = 0.0;
  int64_t batch_size = 0;  // for the header line
  Device device = Device::cpu();
};

class ClassificationTask : public Task {
 public:
  // The model must already be on spec.device; `train` and `test` outlive the task.
  ClassificationTask(std::shared_ptr<nn::Module> model, ClassificationSpec spec,
                     data::BatchSource& train, data::BatchSource& test);
  nn::Module& model() override { return *model_; }
  std::vector<Phase> phases() override;
  std::vector<std::string> predictor_names() const override { return {"1"}; }
  data::BatchSource& train_data() override { return train_; }
  StepOutput train_step(const data::Batch& batch, int phase) override;
  Evaluation evaluate() override;
  std::string describe() const override;

 private:
  std::shared_ptr<nn::Module> model_;
  ClassificationSpec spec_;
  data::BatchSource& train_;
  data::BatchSource& test_;
};

}  // namespace mel::train
