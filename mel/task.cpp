#include "mel/task.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "core/autograd.h"
#include "core/factory.h"
#include "core/ops_index.h"
#include "core/ops_nn.h"
#include "mel/failure.h"
#include "train/metrics.h"

namespace mel::method {

const char* baseline_name(Baseline b) {
  switch (b) {
    case Baseline::joint:
      return "joint";
    case Baseline::independent:
      return "independent";
    case Baseline::combination_only:
      return "combination_only";
  }
  return "?";
}

JointLossOptions loss_options(const MelSpec& spec, const Ensemble& m, LossPart part) {
  JointLossOptions o;
  const int M = m.spec.M;
  const LossSpec& l = spec.loss;
  for (int i = 0; i < M; ++i) {
    double w = l.size_weights[1];
    if (part == LossPart::heads_only || spec.baseline == Baseline::combination_only) w = 0.0;
    o.weights.push_back(w);
    o.coarse.push_back(l.hierarchical);
  }
  for (const auto& s : m.spec.head_subsets) {
    o.weights.push_back(part == LossPart::exits_only ? 0.0 : l.size_weights[s.size()]);
    o.coarse.push_back(false);
  }
  o.label_smoothing = l.label_smoothing;
  if (l.diversity_weight > 0 && part != LossPart::heads_only) {
    o.diversity_weight = l.diversity_weight;
    o.diversity_margin = l.diversity_margin;
    for (int i = 0; i < M; ++i) {
      for (int j = i + 1; j < M; ++j) o.diversity_pairs.emplace_back(i, j);
    }
  }
  return o;
}

EnsembleTask::EnsembleTask(std::shared_ptr<Ensemble> model, MelSpec spec, data::BatchSource& train,
                           data::BatchSource& test)
    : model_(std::move(model)), spec_(std::move(spec)), train_(train), test_(test) {}

std::string EnsembleTask::describe() const {
  return fmt::format(
      " ({} models, {} heads, baseline {}): {} parameters, {} train samples, batch {}, {} + {} "
      "epochs",
      model_->spec.M, model_->heads.size(), baseline_name(spec_.baseline), model_->num_parameters(),
      train_.num_samples(), spec_.batch_size, spec_.phase1.epochs, spec_.phase2.epochs);
}

EnsembleTask::Tally::Tally(const EnsembleTask& task)
    : task_(task),
      loss_(loss_options(task.spec_, *task.model_, LossPart::joint)),
      correct_(task.model_->predictor_names().size(), 0) {
  e_.names = task.model_->predictor_names();
  if (task.model_->spec.M <= 8) exit_sets_ = all_subsets(task.model_->spec.M, 2);
  averaged_correct_.assign(exit_sets_.size(), 0);
  averaged_loss_.assign(exit_sets_.size(), 0.0);
  loss_sums_.assign(correct_.size(), 0.0);
}

void EnsembleTask::Tally::add(const std::vector<Tensor>& logits, const data::Batch& b) {
  const Device dev = task_.spec_.device;
  const Tensor yc = task_.coarse_of(b);
  loss_sum_ += joint_loss(logits, b.y.to(dev), yc.defined() ? yc.to(dev) : yc, loss_).total_value;
  ++batches_;
  for (size_t k = 0; k < logits.size(); ++k) {
    const bool coarse = static_cast<int>(k) < task_.model_->spec.M && yc.defined();
    correct_[k] += train::count_correct(logits[k], coarse ? yc : b.y);
    CrossEntropyOptions ce;
    ce.reduction = Reduction::sum;
    loss_sums_[k] += cross_entropy(logits[k].detach(), (coarse ? yc : b.y).to(dev), ce).item();
  }
  e_.samples += b.y.numel();
  if (exit_sets_.empty()) return;
  // The exits' probabilities, summed over each set (the average's argmax), against the labels the
  // exits predict.
  const int64_t n = b.y.numel();
  std::vector<std::vector<double>> p;
  int64_t classes = 0;
  for (int i = 0; i < task_.model_->spec.M; ++i) {
    const Tensor pi = softmax(logits[static_cast<size_t>(i)].detach(), 1).to(Device::cpu());
    classes = pi.size(1);
    p.push_back(pi.to(DType::f64).contiguous().to_vector());
  }
  const std::vector<double> labels = (yc.defined() ? yc : b.y).to(Device::cpu()).to_vector();
  std::vector<double> sum(static_cast<size_t>(classes));
  for (size_t s = 0; s < exit_sets_.size(); ++s) {
    for (int64_t r = 0; r < n; ++r) {
      std::fill(sum.begin(), sum.end(), 0.0);
      for (int i : exit_sets_[s]) {
        const double* row = p[static_cast<size_t>(i)].data() + r * classes;
        for (int64_t c = 0; c < classes; ++c) sum[static_cast<size_t>(c)] += row[c];
      }
      const auto best = std::max_element(sum.begin(), sum.end()) - sum.begin();
      const auto label = static_cast<size_t>(labels[static_cast<size_t>(r)]);
      if (best == static_cast<std::ptrdiff_t>(label)) ++averaged_correct_[s];
      averaged_loss_[s] -=
          std::log(std::max(sum[label] / static_cast<double>(exit_sets_[s].size()), 1e-300));
    }
  }
}

train::Evaluation EnsembleTask::Tally::finish() {
  for (int64_t v : correct_) {
    e_.accuracy.push_back(e_.samples ? static_cast<double>(v) / static_cast<double>(e_.samples)
                                     : 0);
  }
  e_.loss = batches_ ? loss_sum_ / static_cast<double>(batches_) : 0.0;
  const double n = static_cast<double>(std::max<int64_t>(e_.samples, 1));
  for (double v : loss_sums_) e_.losses.push_back(v / n);
  for (size_t s = 0; s < exit_sets_.size() && e_.samples > 0; ++s) {
    e_.combined[exits_name(exit_sets_[s])] =
        static_cast<double>(averaged_correct_[s]) / static_cast<double>(e_.samples);
    e_.combined_loss[exits_name(exit_sets_[s])] = averaged_loss_[s] / n;
  }
  return e_;
}

MelTask::MelTask(std::shared_ptr<Ensemble> model, MelSpec spec, data::BatchSource& train,
                 data::BatchSource& test)
    : EnsembleTask(std::move(model), std::move(spec), train, test) {
  const LossPart first =
      spec_.baseline == Baseline::independent ? LossPart::exits_only : LossPart::joint;
  phase_loss_ = {loss_options(spec_, *model_, first),
                 loss_options(spec_, *model_, LossPart::heads_only)};
}

std::vector<train::Phase> MelTask::phases() {
  // Phase 2 optimises the heads alone: its flat buffer holds only their parameters.
  return {{"", spec_.phase1.epochs, model_.get(), spec_.phase1.optimizer, spec_.phase1.schedule},
          {"heads", spec_.phase2.epochs, model_->child("heads").get(), spec_.phase2.optimizer,
           spec_.phase2.schedule}};
}

void set_phase_mode(Ensemble& m, int phase) {
  m.train();
  if (phase == 1) m.child("upstream")->eval();  // frozen: running statistics fixed
}

void MelTask::begin_epoch(int phase) {
  set_phase_mode(*model_, phase);
}

Tensor coarse_labels(const LossSpec& l, const data::Batch& b) {
  if (!l.hierarchical) return Tensor();
  if (l.coarse_map.empty()) return b.y_coarse;
  Tensor out = empty({b.y.numel()}, DType::i64);
  const int64_t* y = b.y.data<int64_t>();
  int64_t* o = out.data<int64_t>();
  for (int64_t i = 0; i < b.y.numel(); ++i) o[i] = l.coarse_map[static_cast<size_t>(y[i])];
  return out;
}

void MelTask::begin_step(int phase, int64_t step) {
  if (spec_.failout.enabled()) up_ = servers_up(spec_.failout, phase, step);
}

train::StepOutput MelTask::train_step(const data::Batch& b, int phase) {
  if (spec_.failout.enabled()) return failout_step(b, phase);
  const Device dev = spec_.device;
  const Tensor yc = coarse_of(b);
  const Tensor x = b.x.to(dev);
  const Tensor y = b.y.to(dev);
  const Tensor ycd = yc.defined() ? yc.to(dev) : yc;
  std::vector<Tensor> logits =
      phase == 1 ? model_->forward_all_frozen_upstream(x) : model_->forward_all(x);
  JointLossResult jl = joint_loss(logits, y, ycd, phase_loss_[static_cast<size_t>(phase)]);
  std::vector<Tensor> correct;
  for (size_t k = 0; k < logits.size(); ++k) {
    const bool coarse = static_cast<int>(k) < model_->spec.M && ycd.defined();
    correct.push_back(train::correct_on_device(logits[k], coarse ? ycd : y));
  }
  // The loss came back with the terms (no extra synchronisation for it).
  return {jl.total, jl.total_value, stack(correct, 0), b.y.numel(), {}, {}};
}

// The step with the servers of up_ only: the down ones compute nothing, and only the predictors
// whose inputs arrived are in the loss and trained.
train::StepOutput MelTask::failout_step(const data::Batch& b, int phase) {
  const Device dev = spec_.device;
  const int M = model_->spec.M;
  const Tensor x = b.x.to(dev);
  const Tensor y = b.y.to(dev);
  const Tensor yc = coarse_of(b);
  const Tensor ycd = yc.defined() ? yc.to(dev) : yc;
  const std::vector<bool> present = predictors_present(model_->spec, up_);
  std::vector<Tensor> features(static_cast<size_t>(M)), logits;
  {
    std::optional<autograd::NoGradGuard> frozen;
    if (phase == 1) frozen.emplace();
    for (int i = 0; i < M; ++i) {
      if (!up_[static_cast<size_t>(i)]) continue;
      Upstream& u = *model_->upstreams[static_cast<size_t>(i)];
      features[static_cast<size_t>(i)] = u.backbone->forward(x);
      logits.push_back(u.exit->forward(features[static_cast<size_t>(i)]));
    }
  }
  for (size_t k = 0; k < model_->heads.size(); ++k) {
    if (!present[static_cast<size_t>(M) + k]) continue;
    std::vector<Tensor> parts;
    for (int i : model_->spec.head_subsets[k]) parts.push_back(features[static_cast<size_t>(i)]);
    logits.push_back(model_->heads[k]->forward(concat(parts, 1)));
  }
  train::StepOutput out;
  out.samples = b.y.numel();
  out.absent.resize(present.size());
  for (size_t k = 0; k < present.size(); ++k) out.absent[k] = !present[k];
  out.untrained = untrained_prefixes(*model_, present, phase == 0 ? "" : "heads");
  std::vector<Tensor> correct;
  size_t next = 0;
  for (size_t k = 0; k < present.size(); ++k) {
    const bool coarse = static_cast<int>(k) < M && ycd.defined();
    correct.push_back(present[k] ? train::correct_on_device(logits[next++], coarse ? ycd : y)
                                 : zeros({}, DType::i64, dev));
  }
  out.correct = stack(correct, 0);
  if (logits.empty()) {  // every server down: nothing to learn from this batch
    out.loss = zeros({}, DType::f32, dev);
    out.loss_value = 0.0;
    return out;
  }
  JointLossResult jl =
      joint_loss(logits, y, ycd, present_terms(phase_loss_[static_cast<size_t>(phase)], present));
  out.loss = jl.total;
  out.loss_value = jl.total_value;
  return out;
}

train::Evaluation MelTask::evaluate() {
  autograd::NoGradGuard ng;
  const bool was = model_->is_training();
  model_->eval();
  test_.start_epoch(0);
  Tally tally(*this);
  data::Batch b;
  while (test_.next(b)) tally.add(model_->forward_all(b.x.to(spec_.device)), b);
  model_->train(was);
  return tally.finish();
}

}  // namespace mel::method
