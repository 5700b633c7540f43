// Fuzz target: a safetensors file (core/safetensors), parsed from memory by the loader the file
// API uses. A clean mel::Error is the expected answer to a malformed file; anything else is a bug.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const mel::SafetensorsFile f = mel::parse_safetensors(data, size, "fuzz.safetensors");
    for (const auto& [name, t] : f.tensors) {
      // Every tensor must be addressable as what it claims to be.
      if (f.find(name) == nullptr || t.nbytes() != t.numel() * mel::dtype_size(t.dtype())) {
        __builtin_trap();
      }
    }
  } catch (const mel::Error&) {
  }
  return 0;
}
