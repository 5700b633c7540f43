// Tensor printing: a header line (shape, dtype, device, grad state) and the values, eliding the
// middle of long dimensions as PyTorch does.
#include <ostream>
#include <sstream>

#include "core/autograd.h"
#include "core/tensor.h"

namespace mel {
namespace {

constexpr int64_t kEdge = 3;  // values shown at each end of an elided dimension
constexpr int64_t kElideAbove = 8;

void print_values(std::ostringstream& os, const Tensor& t, std::vector<int64_t>& idx, size_t d,
                  int indent) {
  const int64_t n = t.shape()[d];
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (n > kElideAbove && i == kEdge) {
      os << "...";
      if (d + 1 < t.shape().size())
        os << ",\n" << std::string(indent + 1, ' ');
      else
        os << ", ";
      i = n - kEdge - 1;
      continue;
    }
    idx[d] = i;
    if (d + 1 == t.shape().size()) {
      double v = t.at(idx);
      if (is_floating(t.dtype()))
        os << fmt::format("{:.4g}", v);
      else
        os << static_cast<int64_t>(v);
    } else {
      print_values(os, t, idx, d + 1, indent + 1);
    }
    if (i + 1 < n) {
      if (d + 1 < t.shape().size())
        os << ",\n" << std::string(indent + 1, ' ');
      else
        os << ", ";
    }
  }
  os << ']';
}

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype())
     << ", device=" << device().str();
  if (requires_grad()) {
    os << ", requires_grad";
    if (grad_fn()) os << ", grad_fn=" << grad_fn()->name();
  }
  os << ")\n";
  // GPU values are read back once, then printed like a CPU tensor's.
  const Tensor host = device().is_cpu() ? *this : detach().to(Device::cpu());
  if (dim() == 0) {
    double v = host.item();
    os << (is_floating(dtype()) ? fmt::format("{:.4g}", v)
                                : fmt::format("{}", static_cast<int64_t>(v)));
  } else {
    std::vector<int64_t> idx(dim(), 0);
    print_values(os, host, idx, 0, 0);
  }
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  return os << t.str();
}

}  // namespace mel
