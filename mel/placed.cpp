#include "mel/placed.h"

#include <fmt/format.h>

#include <chrono>

#include "core/autograd.h"
#include "core/factory.h"
#include "core/ops_elementwise.h"
#include "core/ops_index.h"
#include "core/ops_reduce.h"
#include "train/metrics.h"

namespace mel::method {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

PlacedMelTask::PlacedMelTask(std::shared_ptr<Ensemble> model, MelSpec spec,
                             data::BatchSource& train, data::BatchSource& test,
                             dist::Communicator& comm)
    : model_(std::move(model)),
      spec_(std::move(spec)),
      train_(train),
      test_(test),
      comm_(comm),
      nothing_(std::make_shared<nn::Sequential>()) {
  const int M = model_->spec.M;
  MEL_CHECK(comm_.size() == M + 1,
            "placed training of {} models needs {} ranks (one per upstream model, then the "
            "combination server), but the {} communicator has {}",
            M, M + 1, comm_.backend(), comm_.size());
  const LossPart first =
      spec_.baseline == Baseline::independent ? LossPart::exits_only : LossPart::joint;
  loss_ = {loss_options(spec_, *model_, first), loss_options(spec_, *model_, LossPart::heads_only)};
}

std::vector<train::Phase> PlacedMelTask::phases() {
  nn::Module* first = combiner() ? model_->child("heads").get()
                                 : model_->upstreams[static_cast<size_t>(comm_.rank())].get();
  nn::Module* second = combiner() ? model_->child("heads").get() : nothing_.get();
  return {{"", spec_.phase1.epochs, first, spec_.phase1.optimizer, spec_.phase1.schedule},
          {"heads", spec_.phase2.epochs, second, spec_.phase2.optimizer, spec_.phase2.schedule}};
}

void PlacedMelTask::begin_epoch(int phase) {
  model_->train();
  if (phase == 1) model_->child("upstream")->eval();  // frozen: running statistics fixed
}

Tensor PlacedMelTask::coarse_of(const data::Batch& b) const {
  const LossSpec& l = spec_.loss;
  if (!l.hierarchical) return Tensor();
  if (l.coarse_map.empty()) return b.y_coarse;
  Tensor out = empty({b.y.numel()}, DType::i64);
  const int64_t* y = b.y.data<int64_t>();
  int64_t* o = out.data<int64_t>();
  for (int64_t i = 0; i < b.y.numel(); ++i) o[i] = l.coarse_map[static_cast<size_t>(y[i])];
  return out;
}

void PlacedMelTask::send(const Tensor& t, int dst) {
  const auto t0 = Clock::now();
  const Tensor c = t.detach().to(comm_.device()).contiguous();
  comm_.send(c, dst);
  stats_.bytes_sent += static_cast<double>(c.nbytes());
  stats_.send_seconds += since(t0);
}

Tensor PlacedMelTask::recv(const Shape& shape, int src) {
  const auto t0 = Clock::now();
  Tensor t = empty(shape, DType::f32, comm_.device());
  comm_.recv(t, src);
  stats_.wait_seconds += since(t0);
  return t.to(spec_.device);
}

// On C: every upstream's features, then its exit's logits, for a batch of `batch` samples.
std::vector<Tensor> PlacedMelTask::receive_outputs(int64_t batch, bool with_grad) {
  const int M = model_->spec.M;
  std::vector<Tensor> features, exits;
  for (int i = 0; i < M; ++i) {
    Shape fs = model_->upstreams[static_cast<size_t>(i)]->feature_shape;
    fs.insert(fs.begin(), batch);
    features.push_back(recv(fs, i));
    exits.push_back(recv({batch, model_->spec.exit_classes}, i));
    if (with_grad) {
      features.back().requires_grad_();
      exits.back().requires_grad_();
    }
  }
  features.insert(features.end(), exits.begin(), exits.end());
  return features;
}

train::StepOutput PlacedMelTask::upstream_step(const data::Batch& b, int phase) {
  const int i = comm_.rank(), M = model_->spec.M;
  Upstream& up = *model_->upstreams[static_cast<size_t>(i)];
  const Tensor x = b.x.to(spec_.device);
  const Tensor zero_counts = zeros({M + static_cast<int64_t>(model_->heads.size())}, DType::i64);
  if (phase == 1) {  // frozen: the features only
    autograd::NoGradGuard ng;
    const Tensor f = up.backbone->forward(x);
    send(f, M);
    send(up.exit->forward(f), M);
    return {zeros({}), 0.0, zero_counts, b.y.numel()};
  }
  const Tensor f = up.backbone->forward(x);
  const Tensor e = up.exit->forward(f);
  send(f, M);
  send(e, M);
  const Tensor gf = recv(f.shape(), M);
  const Tensor ge = recv(e.shape(), M);
  // d(surrogate)/df = gf and d(surrogate)/de = ge exactly (the gradient of a sum of products), so
  // one backward gives the parameters the gradients of the joint loss. The exit's own
  // cross-entropy is in ge: C computes it with the diversity term, so that the two sum in the
  // fused kernel's order and the result is the one of a single process bit for bit.
  const Tensor surrogate = add(sum(mul(f, gf)), sum(mul(e, ge)));
  return {surrogate, 0.0, zero_counts, b.y.numel()};
}

train::StepOutput PlacedMelTask::combiner_step(const data::Batch& b, int phase) {
  const int M = model_->spec.M;
  const int64_t n = b.y.numel();
  std::vector<Tensor> outs = receive_outputs(n, phase == 0);
  const std::vector<Tensor> features(outs.begin(), outs.begin() + M);
  std::vector<Tensor> logits(outs.begin() + M, outs.end());
  for (Tensor& h : model_->heads_forward(features)) logits.push_back(h);
  const Tensor y = b.y.to(spec_.device);
  const Tensor yc = coarse_of(b);
  const Tensor ycd = yc.defined() ? yc.to(spec_.device) : yc;
  const JointLossResult jl = joint_loss(logits, y, ycd, loss_[static_cast<size_t>(phase)]);
  if (jl.total.requires_grad()) jl.total.backward();
  if (phase == 0) {
    for (int i = 0; i < M; ++i) {
      for (const Tensor& t : {features[static_cast<size_t>(i)], logits[static_cast<size_t>(i)]}) {
        send(t.grad().defined() ? t.grad() : zeros_like(t), i);
      }
    }
  }
  std::vector<Tensor> correct;
  for (int k = 0; k < static_cast<int>(logits.size()); ++k) {
    correct.push_back(train::correct_on_device(logits[k], k < M && ycd.defined() ? ycd : y));
  }
  return {jl.total.detach(), jl.total_value, stack(correct, 0), n};
}

train::StepOutput PlacedMelTask::train_step(const data::Batch& b, int phase) {
  const auto t0 = Clock::now();
  const double comm_before = stats_.send_seconds + stats_.wait_seconds;
  train::StepOutput out = combiner() ? combiner_step(b, phase) : upstream_step(b, phase);
  // The backward the trainer runs next is compute as well; it is counted with the next step's.
  stats_.compute_seconds += since(t0) - (stats_.send_seconds + stats_.wait_seconds - comm_before);
  stats_.samples += static_cast<double>(b.y.numel());
  return out;
}

train::Evaluation PlacedMelTask::evaluate() {
  autograd::NoGradGuard ng;
  const bool was = model_->is_training();
  model_->eval();
  const int M = model_->spec.M;
  train::Evaluation e;
  e.names = model_->predictor_names();
  std::vector<int64_t> correct(e.names.size(), 0);
  double loss_sum = 0.0;
  int64_t batches = 0;
  test_.start_epoch(0);
  data::Batch b;
  while (test_.next(b)) {
    if (!combiner()) {
      const Upstream& up = *model_->upstreams[static_cast<size_t>(comm_.rank())];
      const Tensor f = up.backbone->forward(b.x.to(spec_.device));
      send(f, M);
      send(up.exit->forward(f), M);
      continue;
    }
    std::vector<Tensor> outs = receive_outputs(b.y.numel(), false);
    const std::vector<Tensor> features(outs.begin(), outs.begin() + M);
    std::vector<Tensor> logits(outs.begin() + M, outs.end());
    for (Tensor& h : model_->heads_forward(features)) logits.push_back(h);
    const Tensor yc = coarse_of(b);
    loss_sum += joint_loss(logits, b.y.to(spec_.device), yc.defined() ? yc.to(spec_.device) : yc,
                           loss_options(spec_, *model_, LossPart::joint))
                    .total_value;
    ++batches;
    for (size_t k = 0; k < logits.size(); ++k) {
      const bool coarse = static_cast<int>(k) < M && yc.defined();
      correct[k] += train::count_correct(logits[k], coarse ? yc : b.y);
    }
    e.samples += b.y.numel();
  }
  model_->train(was);
  for (int64_t v : correct) {
    e.accuracy.push_back(e.samples ? static_cast<double>(v) / static_cast<double>(e.samples) : 0);
  }
  e.loss = batches ? loss_sum / static_cast<double>(batches) : 0.0;
  exchange_stats();
  return e;
}

void PlacedMelTask::exchange_stats() {
  auto pack = [](const PlacedStats& s) {
    return tensor({s.compute_seconds, s.send_seconds, s.wait_seconds, s.bytes_sent, s.samples}, {5},
                  DType::f64);
  };
  Tensor all = comm_.all_gather(pack(stats_));
  rank_stats_.clear();
  for (int r = 0; r < comm_.size(); ++r) {
    const std::vector<double> v = all.select(0, r).to_vector();
    rank_stats_.push_back({v[0], v[1], v[2], v[3], v[4]});
  }
}

std::string PlacedMelTask::describe() const {
  return fmt::format(
      " ({} models, {} heads, baseline {}, placed on {} {} ranks: upstream i on rank i - 1, C on "
      "rank {}): {} parameters, {} train samples, batch {}, {} + {} epochs",
      model_->spec.M, model_->heads.size(), baseline_name(spec_.baseline), comm_.size(),
      comm_.backend(), model_->spec.M, model_->num_parameters(), train_.num_samples(),
      spec_.batch_size, spec_.phase1.epochs, spec_.phase2.epochs);
}

int64_t PlacedMelTask::feature_bytes_per_sample(int i) const {
  return numel_of(model_->upstreams[static_cast<size_t>(i)]->feature_shape) *
         static_cast<int64_t>(sizeof(float));
}

}  // namespace mel::method
