#include "train/device.h"

#include <fmt/format.h>
#include <omp.h>

#include "core/cuda_context.h"
#include "kernels/cpu/gemm.h"

namespace mel::train {

Device run_device(const std::string& spec, const char* command) {
  const Device device = Device::parse(spec);
  try {
    check_device_available(device);
  } catch (const Error& e) {
    fail("{}: --device {}: {}", command, spec, e.what());
  }
  return device;
}

Device module_device(const nn::Module& m) {
  std::vector<Tensor> ps = m.parameters();
  return ps.empty() ? Device::cpu() : ps.front().device();
}

std::string compute_description(Device d) {
  if (d.is_cuda()) {
    std::string name;
    MEL_CUDA_ONLY({
      cudaDeviceProp p{};
      if (cudaGetDeviceProperties(&p, d.index) == cudaSuccess) name = p.name;
    });
    return fmt::format("{} {}", d.str(), name);
  }
  return fmt::format("cpu, {} threads, GEMM: {}", omp_get_max_threads(),
                     kernels::cpu::gemm_backend());
}

}  // namespace mel::train
