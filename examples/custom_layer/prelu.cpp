#include "prelu.h"

#include <fmt/format.h>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/factory.h"
#include "core/iter.h"
#include "nn/registry.h"
#include "prelu_kernels.h"

namespace custom {

// ---- the CPU kernels (the reference the CUDA twins are compared with) ----
namespace kernels::cpu {

template <class T>
void prelu_forward(const T* x, const T* a, int64_t outer, int64_t C, int64_t inner, T* y) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t base = (o * C + c) * inner;
      for (int64_t i = 0; i < inner; ++i) {
        const T v = x[base + i];
        y[base + i] = v > T(0) ? v : a[c] * v;
      }
    }
  }
}

template <class T>
void prelu_backward(const T* x, const T* a, const T* gy, int64_t outer, int64_t C, int64_t inner,
                    T* gx, T* ga) {
  for (int64_t c = 0; c < C; ++c) {
    double slope_grad = 0;  // summed in a fixed order: outer, then inner
    for (int64_t o = 0; o < outer; ++o) {
      const int64_t base = (o * C + c) * inner;
      for (int64_t i = 0; i < inner; ++i) {
        const T v = x[base + i], g = gy[base + i];
        if (gx) gx[base + i] = v > T(0) ? g : a[c] * g;
        if (v <= T(0)) slope_grad += static_cast<double>(g * v);
      }
    }
    if (ga) ga[c] = static_cast<T>(slope_grad);
  }
}

template void prelu_forward<float>(const float*, const float*, int64_t, int64_t, int64_t, float*);
template void prelu_forward<double>(const double*, const double*, int64_t, int64_t, int64_t,
                                    double*);
template void prelu_backward<float>(const float*, const float*, const float*, int64_t, int64_t,
                                    int64_t, float*, float*);
template void prelu_backward<double>(const double*, const double*, const double*, int64_t, int64_t,
                                     int64_t, double*, double*);

}  // namespace kernels::cpu

#ifdef MEL_HAVE_CUDA
void kernels::cuda::launch_failed(const char* what, const char* message) {
  mel::fail("prelu: {} failed: {}", what, message);
}
#endif

// ---- the op: validation, dispatch to the device's kernel, the autograd node ----

mel::Tensor prelu(const mel::Tensor& x, const mel::Tensor& weight) {
  using mel::Tensor;
  const char* op = "prelu";
  mel::check_defined(op, x, "the input");
  mel::check_defined(op, weight, "the weight");
  MEL_CHECK(x.dim() >= 2, "prelu: expected an input [N, C, ...], got shape {}",
            mel::shape_str(x.shape()));
  const int64_t C = x.shape()[1];
  MEL_CHECK(weight.dim() == 1 && weight.shape()[0] == C,
            "prelu: weight has shape {} but the input {} has {} channels (expected [{}])",
            mel::shape_str(weight.shape()), mel::shape_str(x.shape()), C, C);
  mel::check_same(op, {x, weight});
  MEL_CHECK(x.dtype() == mel::DType::f32 || x.dtype() == mel::DType::f64,
            "prelu: expected f32 or f64, got {}", mel::dtype_name(x.dtype()));
  const int64_t outer = x.shape()[0];
  const int64_t inner = C == 0 || outer == 0 ? 0 : x.numel() / (outer * C);
  Tensor xc = x.detach().contiguous(), wc = weight.detach().contiguous();
  Tensor y = mel::empty(x.shape(), x.dtype(), x.device());
  mel::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_DISPATCH_KERNEL(custom::kernels, x.device(), prelu_forward<T>, xc.data<T>(), wc.data<T>(),
                        outer, C, inner, y.data<T>());
  });
  mel::autograd::record(
      op, y, {x, weight},
      [xc, wc, outer, C, inner](const Tensor& g, const mel::autograd::GradMask& need) {
        Tensor gc = g.contiguous();
        Tensor gx = need[0] ? mel::empty(xc.shape(), xc.dtype(), xc.device()) : Tensor();
        Tensor ga = need[1] ? mel::empty({C}, xc.dtype(), xc.device()) : Tensor();
        mel::dispatch_float(xc.dtype(), "prelu backward", [&](auto tag) {
          using T = typename decltype(tag)::type;
          MEL_DISPATCH_KERNEL(custom::kernels, xc.device(), prelu_backward<T>, xc.data<T>(),
                              wc.data<T>(), gc.data<T>(), outer, C, inner,
                              gx.defined() ? gx.data<T>() : nullptr,
                              ga.defined() ? ga.data<T>() : nullptr);
        });
        return std::vector<Tensor>{gx, ga};
      });
  return y;
}

// ---- the layer and its registration ----

PReLU::PReLU(int64_t channels_, double init_) : Module("PReLU"), channels(channels_), init(init_) {
  MEL_CHECK(channels > 0, "PReLU: channels must be positive, got {}", channels);
  weight = register_parameter("weight", mel::full({channels}, init));
}

void PReLU::init_parameters(mel::Generator&) {
  mel::autograd::NoGradGuard ng;
  weight.fill_(init);  // PyTorch's default: a constant, no random draws
}

mel::Tensor PReLU::forward(const mel::Tensor& x) {
  return prelu(x, weight);
}

std::string PReLU::extra_repr() const {
  return fmt::format("num_parameters={}", channels);
}

void register_prelu() {
  if (mel::nn::has_layer_type("prelu")) return;
  mel::nn::register_layer(
      {"prelu",
       [](const mel::JsonReader& args, const mel::Shape& in) -> std::shared_ptr<mel::nn::Module> {
         if (in.empty()) throw mel::nn::ShapeError("a [C, ...] or [F] input per sample");
         return std::make_shared<PReLU>(in[0], args.get_number("init", 0.25));
       },
       nullptr,    // the shape passes through
       nullptr});  // no fusion
}

}  // namespace custom
