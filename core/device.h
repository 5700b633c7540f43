// Devices (cpu, cuda:N): parsing, printing, and the checks that a requested device exists in this
// build and on this machine.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace mel {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  // "cpu", "cuda", "cuda:1"; throws mel::Error on anything else.
  static Device parse(std::string_view s);

  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  std::string str() const;
  bool operator==(const Device&) const = default;
};

// True when the library was built with the CUDA backend.
bool cuda_built();
// Number of visible CUDA devices (0 without CUDA support or without a GPU).
int cuda_device_count();
// Throws mel::Error explaining why `d` cannot be used (no CUDA build, no GPU, bad ordinal).
void check_device_available(Device d);

}  // namespace mel
