#include "train/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops_elementwise.h"
#include "core/ops_index.h"
#include "core/ops_reduce.h"

namespace mel::train {

StepMetrics::StepMetrics(size_t predictors, int64_t epoch, int64_t read_every,
                         double divergence_factor, double lowest_loss)
    : correct_(predictors, 0),
      seen_(predictors, 0),
      epoch_(epoch),
      read_every_(read_every),
      factor_(divergence_factor),
      lowest_(lowest_loss) {}

bool StepMetrics::add(StepOutput out, int64_t step, double lr) {
  out.loss = out.loss.detach();
  out.correct = out.correct.detach();
  pending_.push_back({std::move(out), step, lr});
  last_lr_ = lr;
  if (static_cast<int64_t>(pending_.size()) < read_every_) return false;
  flush();
  return true;
}

void StepMetrics::flush() {
  if (pending_.empty()) return;
  // One copy for the losses not already on the host, one for the correct counts.
  std::vector<Tensor> losses, counts;
  for (const Pending& p : pending_) {
    if (!p.out.loss_value) losses.push_back(p.out.loss.reshape({1}));
    counts.push_back(p.out.correct.reshape({1, -1}));
  }
  const std::vector<double> values =
      losses.empty() ? std::vector<double>{} : concat(losses, 0).to(Device::cpu()).to_vector();
  const std::vector<double> correct = concat(counts, 0).to(Device::cpu()).to_vector();
  const size_t P = correct_.size();
  size_t next_value = 0;
  for (size_t i = 0; i < pending_.size(); ++i) {
    const Pending& p = pending_[i];
    const double l = p.out.loss_value ? *p.out.loss_value : values[next_value++];
    MEL_CHECK(std::isfinite(l),
              "mel train: the loss became {} at epoch {} step {} (lr {}); lower the learning rate "
              "or enable clip_grad_norm (the last checkpoint written is kept)",
              l, epoch_ + 1, p.step, p.lr);
    if (factor_ > 0.0 && std::isfinite(lowest_)) {
      const double limit = factor_ * std::max(lowest_, 1.0);
      MEL_CHECK(l <= limit,
                "mel train: the loss exploded to {:.4g} at epoch {} step {} (lr {}), above {} x "
                "max(lowest loss so far {:.4g}, 1); lower the learning rate or enable "
                "clip_grad_norm (train.divergence_factor sets the factor; the last checkpoint "
                "written is kept)",
                l, epoch_ + 1, p.step, p.lr, factor_, lowest_);
    }
    lowest_ = std::min(lowest_, l);
    loss_sum_ += l * static_cast<double>(p.out.samples);
    for (size_t k = 0; k < P; ++k) {
      correct_[k] += static_cast<int64_t>(correct[i * P + k]);
      if (p.out.absent.empty() || !p.out.absent[k]) seen_[k] += p.out.samples;
    }
    samples_ += p.out.samples;
    ++steps_;
  }
  pending_.clear();
}

void check_finite_state(const nn::Module& model, int64_t epoch) {
  auto check = [&](const nn::NamedTensors& tensors, const char* what) {
    for (const auto& [name, t] : tensors) {
      if (!is_floating(t.dtype()) || t.numel() == 0) continue;
      const std::vector<double> v = t.detach().to(Device::cpu()).to_vector();
      const auto bad =
          std::count_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); });
      MEL_CHECK(bad == 0,
                "mel train: {} '{}' holds {} non-finite value(s) after epoch {}: the run diverged "
                "(lower the learning rate or enable clip_grad_norm); the last checkpoint written "
                "is kept",
                what, name, bad, epoch + 1);
    }
  };
  check(model.named_parameters(), "parameter");
  check(model.named_buffers(), "buffer");
}

double StepMetrics::accuracy(size_t predictor) const {
  const int64_t n = seen_[predictor];
  return n ? static_cast<double>(correct_[predictor]) / static_cast<double>(n) : 0.0;
}

Tensor correct_on_device(const Tensor& logits, const Tensor& labels) {
  autograd::NoGradGuard ng;
  return sum(eq(argmax(logits.detach(), 1), labels).to(DType::i64));
}

int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  Tensor pred = argmax(logits.detach(), 1).to(Device::cpu());
  const int64_t* p = pred.data<int64_t>();
  const int64_t* y = labels.data<int64_t>();
  int64_t c = 0;
  for (int64_t i = 0; i < labels.numel(); ++i) c += p[i] == y[i];
  return c;
}

namespace {

std::string short_dump(const Json& j) {
  std::string s = j.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

void diff(const Json& a, const Json& b, const std::string& path, std::vector<std::string>& out,
          const std::string& la, const std::string& lb) {
  if (out.size() >= 4 || a == b) return;
  const std::string where = path.empty() ? "the config" : path;
  if (!a.is_object() || !b.is_object()) {
    out.push_back(fmt::format("{}: {} {}, {} {}", where, short_dump(a), la, short_dump(b), lb));
    return;
  }
  for (auto it = a.begin(); it != a.end(); ++it) {
    const std::string p = path.empty() ? it.key() : path + "." + it.key();
    if (!b.contains(it.key())) {
      out.push_back(fmt::format("{}: {} {}, absent {}", p, short_dump(it.value()), la, lb));
    } else {
      diff(it.value(), b[it.key()], p, out, la, lb);
    }
    if (out.size() >= 4) return;
  }
  for (auto it = b.begin(); it != b.end() && out.size() < 4; ++it) {
    if (!a.contains(it.key())) {
      const std::string p = path.empty() ? it.key() : path + "." + it.key();
      out.push_back(fmt::format("{}: absent {}, {} {}", p, la, short_dump(it.value()), lb));
    }
  }
}

}  // namespace

std::string describe_differences(const Json& a, const Json& b, const std::string& a_label,
                                 const std::string& b_label) {
  std::vector<std::string> out;
  diff(a, b, "", out, a_label, b_label);
  if (out.empty()) return "the configs are written differently";
  return fmt::format("{}", fmt::join(out, "; "));
}

}  // namespace mel::train
