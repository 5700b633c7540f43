// Fuzz target: a NumPy .npy file (data/npy parse_npy). What parses must also write back and parse
// again to the same dtype, shape and bytes. A clean mel::Error is the expected answer to a
// malformed file; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/error.h"
#include "data/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  mel::Tensor t;
  try {
    t = mel::data::parse_npy(bytes, "fuzz.npy");
  } catch (const mel::Error&) {
    return 0;
  }
  const mel::Tensor back = mel::data::parse_npy(mel::data::npy_bytes(t), "fuzz.npy (rewritten)");
  if (back.dtype() != t.dtype() || back.shape() != t.shape() || back.nbytes() != t.nbytes() ||
      (t.nbytes() > 0 && std::memcmp(back.data_ptr(), t.data_ptr(), t.nbytes()) != 0)) {
    __builtin_trap();
  }
  return 0;
}
