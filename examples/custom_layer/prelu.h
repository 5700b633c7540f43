// A learnable PReLU for mel: the op (autograd, both devices), the layer and its registration
// under the config type "prelu" ({"type": "prelu", "init": 0.25}).
#pragma once
#include "core/tensor.h"
#include "nn/module.h"

namespace custom {

// y = max(0, x) + weight[c] * min(0, x) over channel dim 1 of x ([N, C] or [N, C, ...]).
mel::Tensor prelu(const mel::Tensor& x, const mel::Tensor& weight);

class PReLU : public mel::nn::Module {
 public:
  explicit PReLU(int64_t channels, double init = 0.25);
  mel::Tensor forward(const mel::Tensor& x) override;
  std::string extra_repr() const override;
  mel::Tensor weight;  // [channels]
  int64_t channels;
  double init;

 protected:
  void init_parameters(mel::Generator& gen) override;
};

// Adds "prelu" to mel's layer registry (once; later calls do nothing).
void register_prelu();

}  // namespace custom
