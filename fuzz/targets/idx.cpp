// Fuzz target: an IDX file (data/idx), plain or gzip-compressed (data/io's gunzip, chosen by the
// gzip magic 1f 8b as a ".gz" name would choose it). A clean mel::Error is the expected answer to
// a malformed file; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "data/idx.h"
#include "data/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    mel::Tensor t;
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
      const std::vector<uint8_t> raw = mel::data::gunzip(data, size, "fuzz-idx3-ubyte.gz");
      t = mel::data::parse_idx(raw.data(), raw.size(), "fuzz-idx3-ubyte.gz");
    } else {
      t = mel::data::parse_idx(data, size, "fuzz-idx3-ubyte");
    }
    if (t.dtype() != mel::DType::u8 || t.numel() > static_cast<int64_t>(size) * 1100) {
      __builtin_trap();
    }
  } catch (const mel::Error&) {
  }
  return 0;
}
