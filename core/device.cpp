#include "core/device.h"

#include <charconv>

#include "core/error.h"

#ifdef MEL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace mel {

Device Device::parse(std::string_view s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.starts_with("cuda:")) {
    std::string_view num = s.substr(5);
    int idx = -1;
    auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), idx);
    if (ec == std::errc() && ptr == num.data() + num.size() && idx >= 0 && !num.empty()) {
      return cuda(idx);
    }
  }
  fail("Device::parse: '{}' is not a device (expected 'cpu', 'cuda' or 'cuda:N' with N >= 0)",
       std::string(s));
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index);
}

bool cuda_built() {
#ifdef MEL_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef MEL_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" status
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

void check_device_available(Device d) {
  if (d.is_cpu()) return;
  if (!cuda_built()) {
    fail(
        "device {}: this build of mel has no CUDA backend (configure with -DMEL_CUDA=ON on a "
        "machine with the CUDA toolkit)",
        d.str());
  }
  int n = cuda_device_count();
  if (n == 0) fail("device {}: no CUDA GPU is visible on this machine", d.str());
  if (d.index >= n) {
    fail("device {}: ordinal {} does not exist ({} CUDA device{} visible: cuda:0..cuda:{})",
         d.str(), d.index, n, n == 1 ? "" : "s", n - 1);
  }
}

}  // namespace mel
