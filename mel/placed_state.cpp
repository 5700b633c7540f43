// The collective state operations of PlacedMelTask: the gradient norm over every rank, and the
// model and optimizer state gathered on C in the single-process checkpoint format (and split back
// on resume).
#include "core/autograd.h"
#include "core/factory.h"
#include "core/ops_index.h"
#include "mel/placed.h"

namespace mel::method {

double PlacedMelTask::reduce_squared_norm(double local) {
  Tensor t = full({1}, local, DType::f64);
  comm_.all_reduce_sum(t);
  return t.item();
}

// Every upstream sends its state dict (parameters and buffers) to C, which copies it into its
// replica of the whole ensemble, so that C's model() is what one process would checkpoint.
void PlacedMelTask::gather_model() {
  const int M = model_->spec.M;
  if (replica() > 0) return;  // replica 0's weights are every replica's
  if (!combiner()) {
    for (const auto& [name, t] :
         model_->upstreams[static_cast<size_t>(comm_.rank())]->state_dict()) {
      comm_.send(t.detach().to(comm_.device()).contiguous(), M);
    }
    return;
  }
  autograd::NoGradGuard ng;
  for (int i = 0; i < M; ++i) {
    for (auto& [name, t] : model_->upstreams[static_cast<size_t>(i)]->state_dict()) {
      Tensor got = empty(t.shape(), t.dtype(), comm_.device());
      comm_.recv(got, i);
      Tensor target = t.detach();
      target.copy_(got);
    }
  }
}

// The optimizer's flat state tensors of every rank, concatenated in rank order on C: upstream 1's
// parameters, ..., upstream M's, then the heads', which is the order of one process's flat
// buffer over the whole ensemble. Scalars (the step count) are the same on every rank.
nn::NamedTensors PlacedMelTask::gather_optimizer_state(const nn::Optimizer& local) {
  const int M = model_->spec.M;
  const nn::NamedTensors mine = local.state();
  if (replica() > 0) return {};
  if (!combiner()) {
    std::vector<int64_t> sizes;
    for (const auto& [name, t] : mine) sizes.push_back(t.numel());
    comm_.send(tensor_i64(sizes, {static_cast<int64_t>(sizes.size())}), M);
    for (const auto& [name, t] : mine) comm_.send(t.detach().to(comm_.device()).contiguous(), M);
    return {};
  }
  std::vector<std::vector<Tensor>> parts(mine.size());
  for (int i = 0; i < M; ++i) {
    Tensor sizes = zeros({static_cast<int64_t>(mine.size())}, DType::i64);
    comm_.recv(sizes, i);
    for (size_t k = 0; k < mine.size(); ++k) {
      const Tensor& own = mine[k].second;
      const int64_t n = sizes.data<int64_t>()[k];
      Tensor got = empty(own.dim() == 0 ? Shape{} : Shape{n}, own.dtype(), comm_.device());
      comm_.recv(got, i);
      parts[k].push_back(got);
    }
  }
  nn::NamedTensors global;
  for (size_t k = 0; k < mine.size(); ++k) {
    const auto& [name, own] = mine[k];
    if (own.dim() == 0) {
      global.emplace_back(name, own);
      continue;
    }
    std::vector<Tensor> all = parts[k];
    all.push_back(own.to(Device::cpu()));
    global.emplace_back(name, concat(all, 0));
  }
  return global;
}

// This rank's slice of each flat state tensor (per parameter element, or per parameter for the
// step counts): its offset is the sum of the lower ranks' sizes of that tensor.
nn::NamedTensors PlacedMelTask::local_optimizer_state(const nn::Optimizer& local,
                                                      const nn::NamedTensors& stored) {
  const nn::NamedTensors mine = local.state();
  std::vector<int64_t> sizes;
  for (const auto& [name, t] : mine) sizes.push_back(t.dim() == 1 ? t.numel() : 0);
  const auto K = static_cast<int64_t>(sizes.size());
  const Tensor all = comm_.all_gather(tensor_i64(sizes, {K}));  // [ranks * K]
  const int64_t* a = all.data<int64_t>();
  nn::NamedTensors out;
  for (const auto& [name, t] : stored) {
    if (t.dim() != 1) {
      out.emplace_back(name, t);
      continue;
    }
    int64_t k = 0;
    while (k < K && mine[static_cast<size_t>(k)].first != name) ++k;
    MEL_CHECK(k < K,
              "resume: the checkpoint's optimizer state has '{}', which this run's {} "
              "optimizer does not keep",
              name, local.name());
    int64_t offset = 0, total = 0;
    for (int r = 0; r < comm_.size(); ++r) {
      const int64_t s = a[r * K + k];
      if (r < comm_.rank()) offset += s;
      total += s;
    }
    MEL_CHECK(t.numel() == total,
              "resume: the checkpoint's optimizer state '{}' has {} values but the ranks' parts "
              "add up to {}",
              name, t.numel(), total);
    out.emplace_back(name, t.narrow(0, offset, sizes[static_cast<size_t>(k)]).contiguous());
  }
  return out;
}

}  // namespace mel::method
