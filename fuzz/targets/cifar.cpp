// Fuzz target: a CIFAR binary batch file (data/cifar). The first byte picks the format (even:
// CIFAR-10, 3073-byte records; odd: CIFAR-100, 3074-byte records), the rest is the file. A clean
// mel::Error is the expected answer to a malformed file; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "data/cifar.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool cifar100 = data[0] & 1;
  const std::vector<uint8_t> bytes(data + 1, data + size);
  try {
    const mel::data::ImageDataset ds =
        cifar100 ? mel::data::parse_cifar100(bytes, "fuzz-train.bin")
                 : mel::data::parse_cifar10(bytes, "fuzz-data_batch_1.bin");
    const int64_t record = cifar100 ? 3074 : 3073;
    if (ds.images.size(0) * record != static_cast<int64_t>(bytes.size())) __builtin_trap();
  } catch (const mel::Error&) {
  }
  return 0;
}
