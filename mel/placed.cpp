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
                             dist::Communicator& comm, dist::Communicator* replicas,
                             dist::Communicator* gpu, dist::Communicator* replicas_gpu)
    : EnsembleTask(std::move(model), std::move(spec), train, test),
      comm_(comm),
      replicas_(replicas && replicas->size() > 1 ? replicas : nullptr),
      data_(gpu ? *gpu : comm),
      replicas_data_(replicas_ && replicas_gpu ? replicas_gpu : replicas_),
      nothing_(std::make_shared<nn::Sequential>()) {
  const int M = model_->spec.M;
  MEL_CHECK(comm_.size() == M + 1,
            "placed training of {} models needs {} ranks (one per upstream model, then the "
            "combination server), but the {} communicator has {}",
            M, M + 1, comm_.backend(), comm_.size());
  const LossPart first =
      spec_.baseline == Baseline::independent ? LossPart::exits_only : LossPart::joint;
  loss_ = {loss_options(spec_, *model_, first), loss_options(spec_, *model_, LossPart::heads_only)};
  const int R = num_replicas();
  const int64_t B = spec_.batch_size, rest = train_.num_samples() % B;
  MEL_CHECK(B >= R && (rest == 0 || rest >= R),
            "{} replicas split every batch of {} samples (and the last, of {}) into shares of at "
            "least one sample each: use fewer replicas or another batch size",
            R, B, rest == 0 ? B : rest);
}

// Replica r's rows of the global batch.
data::Batch PlacedMelTask::shard_of(const data::Batch& b) {
  batch_rows_ = b.y.numel();
  if (!replicas_) {
    shard_rows_ = batch_rows_;
    return b;
  }
  const int64_t R = num_replicas(), r = replica();
  const int64_t lo = batch_rows_ * r / R, hi = batch_rows_ * (r + 1) / R;
  shard_rows_ = hi - lo;
  data::Batch s;
  s.x = b.x.narrow(0, lo, shard_rows_);
  s.y = b.y.narrow(0, lo, shard_rows_).contiguous();
  if (b.y_coarse.defined()) s.y_coarse = b.y_coarse.narrow(0, lo, shard_rows_).contiguous();
  s.index = b.index;
  return s;
}

// The gradient of the mean loss over the whole batch: each replica's (of its rows' mean) weighted
// by its share of the rows, summed over the replicas.
void PlacedMelTask::reduce_gradients(nn::FlatParameters& flat) {
  if (!replicas_ || flat.numel() == 0) return;
  const double share = static_cast<double>(shard_rows_) / static_cast<double>(batch_rows_);
  const auto t0 = Clock::now();
  Tensor g = flat.grad();
  Tensor part = mul(g, share).to(replicas_data_->device()).contiguous();
  replicas_data_->all_reduce_sum(part);
  {
    autograd::NoGradGuard ng;
    g.copy_(part.to(g.device()));
  }
  stats_.reduce_seconds += since(t0);
}

// On C with replicas: the loss and correct counts of the whole batch, from every replica's rows.
void PlacedMelTask::reduce_metrics(train::StepOutput& out) {
  if (!replicas_) return;
  const auto t0 = Clock::now();
  const Tensor correct = out.correct.to(Device::cpu()).to(DType::f64);
  std::vector<double> v = {out.loss_value.value_or(0.0) * static_cast<double>(shard_rows_)};
  for (double c : correct.to_vector()) v.push_back(c);
  Tensor t = tensor(v, {static_cast<int64_t>(v.size())}, DType::f64).to(replicas_->device());
  replicas_->all_reduce_sum(t);
  const std::vector<double> all = t.to(Device::cpu()).to_vector();
  out.loss_value = all[0] / static_cast<double>(batch_rows_);
  std::vector<int64_t> counts;
  for (size_t k = 1; k < all.size(); ++k) counts.push_back(static_cast<int64_t>(all[k]));
  out.correct = tensor_i64(counts, {static_cast<int64_t>(counts.size())});
  out.samples = batch_rows_;
  stats_.reduce_seconds += since(t0);
}

std::vector<train::Phase> PlacedMelTask::phases() {
  nn::Module* first = combiner() ? model_->child("heads").get()
                                 : model_->upstreams[static_cast<size_t>(comm_.rank())].get();
  nn::Module* second = combiner() ? model_->child("heads").get() : nothing_.get();
  return {{"", spec_.phase1.epochs, first, spec_.phase1.optimizer, spec_.phase1.schedule},
          {"heads", spec_.phase2.epochs, second, spec_.phase2.optimizer, spec_.phase2.schedule}};
}

void PlacedMelTask::begin_epoch(int phase) {
  set_phase_mode(*model_, phase);
}

void PlacedMelTask::send(const Tensor& t, int dst) {
  const auto t0 = Clock::now();
  const Tensor c = t.detach().to(data_.device()).contiguous();
  data_.send(c, dst);
  stats_.bytes_sent += static_cast<double>(c.nbytes());
  stats_.send_seconds += since(t0);
}

Tensor PlacedMelTask::recv(const Shape& shape, int src) {
  const auto t0 = Clock::now();
  Tensor t = empty(shape, DType::f32, data_.device());
  data_.recv(t, src);
  stats_.wait_seconds += since(t0);
  return t.to(spec_.device);
}

// On C: the features and exit logits of the upstreams that are up (undefined for the others),
// for a batch of `batch` samples.
PlacedMelTask::Received PlacedMelTask::receive_outputs(int64_t batch, bool with_grad) {
  const int M = model_->spec.M;
  Received r;
  r.features.resize(static_cast<size_t>(M));
  r.exits.resize(static_cast<size_t>(M));
  for (int i = 0; i < M; ++i) {
    if (!is_up(i)) continue;
    Shape fs = model_->upstreams[static_cast<size_t>(i)]->feature_shape;
    fs.insert(fs.begin(), batch);
    Tensor& f = r.features[static_cast<size_t>(i)];
    Tensor& e = r.exits[static_cast<size_t>(i)];
    f = recv(fs, i);
    e = recv({batch, model_->spec.exit_classes}, i);
    if (with_grad) {
      f.requires_grad_();
      e.requires_grad_();
    }
  }
  return r;
}

bool PlacedMelTask::is_up(int i) const {
  return up_.empty() || up_[static_cast<size_t>(i)];
}

void PlacedMelTask::begin_step(int phase, int64_t step) {
  if (spec_.failout.enabled()) up_ = servers_up(spec_.failout, phase, step);
}

train::StepOutput PlacedMelTask::upstream_step(const data::Batch& b, int phase) {
  const int i = comm_.rank(), M = model_->spec.M;
  Upstream& up = *model_->upstreams[static_cast<size_t>(i)];
  train::StepOutput out;
  out.loss = zeros({});
  out.loss_value = 0.0;
  out.correct = zeros({M + static_cast<int64_t>(model_->heads.size())}, DType::i64);
  out.samples = b.y.numel();
  if (!is_up(i)) {  // failed this step: computes, sends and trains nothing
    out.untrained = {""};
    return out;
  }
  const Tensor x = b.x.to(spec_.device);
  if (phase == 1) {  // frozen: the features only
    autograd::NoGradGuard ng;
    const Tensor f = up.backbone->forward(x);
    send(f, M);
    send(up.exit->forward(f), M);
    return out;
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
  out.loss = add(sum(mul(f, gf)), sum(mul(e, ge)));
  return out;
}

train::StepOutput PlacedMelTask::combiner_step(const data::Batch& b, int phase) {
  const int M = model_->spec.M;
  const int64_t n = b.y.numel();
  Received r = receive_outputs(n, phase == 0);
  std::vector<bool> up(static_cast<size_t>(M), true);
  if (!up_.empty()) up = up_;
  const std::vector<bool> present = predictors_present(model_->spec, up);
  std::vector<Tensor> logits;
  for (int i = 0; i < M; ++i) {
    if (up[static_cast<size_t>(i)]) logits.push_back(r.exits[static_cast<size_t>(i)]);
  }
  for (size_t k = 0; k < model_->heads.size(); ++k) {
    if (!present[static_cast<size_t>(M) + k]) continue;
    std::vector<Tensor> parts;
    for (int i : model_->spec.head_subsets[k]) parts.push_back(r.features[static_cast<size_t>(i)]);
    logits.push_back(model_->heads[k]->forward(concat(parts, 1)));
  }
  const Tensor y = b.y.to(spec_.device);
  const Tensor yc = coarse_of(b);
  const Tensor ycd = yc.defined() ? yc.to(spec_.device) : yc;
  train::StepOutput out;
  out.samples = n;
  if (!up_.empty()) {
    out.absent.resize(present.size());
    for (size_t k = 0; k < present.size(); ++k) out.absent[k] = !present[k];
    out.untrained = untrained_prefixes(*model_, present, "heads");
  }
  std::vector<Tensor> correct;
  size_t next = 0;
  for (size_t k = 0; k < present.size(); ++k) {
    const bool coarse = static_cast<int>(k) < M && ycd.defined();
    correct.push_back(present[k] ? train::correct_on_device(logits[next++], coarse ? ycd : y)
                                 : zeros({}, DType::i64, spec_.device));
  }
  out.correct = stack(correct, 0);
  if (logits.empty()) {  // every upstream down
    out.loss = zeros({});
    out.loss_value = 0.0;
    return out;
  }
  const JointLossOptions& o = loss_[static_cast<size_t>(phase)];
  const JointLossResult jl =
      joint_loss(logits, y, ycd, up_.empty() ? o : present_terms(o, present));
  if (jl.total.requires_grad()) jl.total.backward();
  if (phase == 0) {
    for (int i = 0; i < M; ++i) {
      if (!up[static_cast<size_t>(i)]) continue;
      for (const Tensor& t :
           {r.features[static_cast<size_t>(i)], r.exits[static_cast<size_t>(i)]}) {
        send(t.grad().defined() ? t.grad() : zeros_like(t), i);
      }
    }
  }
  out.loss = jl.total.detach();
  out.loss_value = jl.total_value;
  return out;
}

train::StepOutput PlacedMelTask::train_step(const data::Batch& b, int phase) {
  const auto t0 = Clock::now();
  const double comm_before = stats_.communication();
  const data::Batch shard = shard_of(b);
  train::StepOutput out = combiner() ? combiner_step(shard, phase) : upstream_step(shard, phase);
  if (combiner()) reduce_metrics(out);
  // The backward the trainer runs next is compute as well; it is counted with the next step's.
  stats_.compute_seconds += since(t0) - (stats_.communication() - comm_before);
  stats_.samples += static_cast<double>(shard.y.numel());
  return out;
}

train::Evaluation PlacedMelTask::evaluate() {
  autograd::NoGradGuard ng;
  up_.clear();                   // every server takes part in the evaluation
  if (replica() > 0) return {};  // replica 0 evaluates (the weights are the same everywhere)
  const bool was = model_->is_training();
  model_->eval();
  const int M = model_->spec.M;
  Tally tally(*this);
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
    const Received r = receive_outputs(b.y.numel(), false);
    std::vector<Tensor> logits = r.exits;
    for (Tensor& h : model_->heads_forward(r.features)) logits.push_back(h);
    tally.add(logits, b);
  }
  model_->train(was);
  exchange_stats();
  return tally.finish();
}

void PlacedMelTask::exchange_stats() {
  auto pack = [](const PlacedStats& s) {
    return tensor({s.compute_seconds, s.send_seconds, s.wait_seconds, s.reduce_seconds,
                   s.bytes_sent, s.samples},
                  {6}, DType::f64);
  };
  Tensor all = comm_.all_gather(pack(stats_));
  rank_stats_.clear();
  for (int r = 0; r < comm_.size(); ++r) {
    const std::vector<double> v = all.select(0, r).to_vector();
    rank_stats_.push_back({v[0], v[1], v[2], v[3], v[4], v[5]});
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
