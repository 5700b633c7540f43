#include "train/classification.h"

#include <fmt/format.h>

#include "core/autograd.h"
#include "train/metrics.h"

namespace mel::train {

Classifier::Classifier(std::shared_ptr<nn::Sequential> t, std::shared_ptr<nn::Sequential> h)
    : Module("Classifier"), trunk(std::move(t)), head(std::move(h)) {
  register_module("trunk", trunk);
  register_module("head", head);
}

Tensor Classifier::forward(const Tensor& x) {
  return head->forward(trunk->forward(x));
}

ClassificationTask::ClassificationTask(std::shared_ptr<nn::Module> model, ClassificationSpec spec,
                                       data::BatchSource& train, data::BatchSource& test)
    : model_(std::move(model)), spec_(std::move(spec)), train_(train), test_(test) {}

std::vector<Phase> ClassificationTask::phases() {
  return {{"", spec_.epochs, model_.get(), spec_.optimizer, spec_.schedule}};
}

StepOutput ClassificationTask::train_step(const data::Batch& b, int) {
  CrossEntropyOptions ce;
  ce.label_smoothing = spec_.label_smoothing;
  const Tensor y = b.y.to(spec_.device);
  Tensor logits = model_->forward(b.x.to(spec_.device));
  Tensor loss = cross_entropy(logits, y, ce);
  return {loss, std::nullopt, correct_on_device(logits, y).reshape({1}), b.y.numel(), {}, {}};
}

Evaluation ClassificationTask::evaluate() {
  autograd::NoGradGuard ng;
  const bool was_training = model_->is_training();
  model_->eval();
  test_.start_epoch(0);
  Evaluation r;
  r.names = predictor_names();
  int64_t correct = 0;
  double loss_sum = 0.0;
  data::Batch b;
  while (test_.next(b)) {
    Tensor logits = model_->forward(b.x.to(spec_.device));
    CrossEntropyOptions ce;
    ce.reduction = Reduction::sum;
    loss_sum += cross_entropy(logits, b.y.to(spec_.device), ce).item();
    correct += count_correct(logits, b.y);
    r.samples += b.y.numel();
  }
  model_->train(was_training);
  r.accuracy = {0.0};
  if (r.samples > 0) {
    r.loss = loss_sum / static_cast<double>(r.samples);
    r.losses = {r.loss};
    r.accuracy[0] = static_cast<double>(correct) / static_cast<double>(r.samples);
  }
  return r;
}

std::string ClassificationTask::describe() const {
  return fmt::format(": {} parameters, {} train / {} test samples, batch {}, {} epochs",
                     model_->num_parameters(), train_.num_samples(), test_.num_samples(),
                     spec_.batch_size, spec_.epochs);
}

}  // namespace mel::train
