// Checkpoints in the safetensors format (8-byte header length, JSON header, raw little-endian
// data): an atomic writer and a loader that validates every field and names the file in each error.
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mel {

struct SafetensorsFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in file order (data offset order)
  std::map<std::string, std::string> metadata;          // the "__metadata__" entry
  // The tensor called `name`, or nullptr.
  const Tensor* find(const std::string& name) const;
};

// Writes `tensors` (CPU, any dtype; non-contiguous ones are gathered) in list order. The file is
// written to path + ".tmp", flushed to disk and renamed over `path`, so a crash leaves either the
// old file or the new one, never half of one. Duplicate or reserved ("__metadata__") names are an
// error. Gradients and autograd state are not saved.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads a whole file. Follows the reference implementation's rules: tensors must tile the data
// section exactly (no overlap, no gap, nothing left over). Dtypes other than F32, F64, BF16, F16,
// I32, I64 and U8 are rejected.
SafetensorsFile load_safetensors(const std::string& path);
// The same rules for a whole file already in memory; `source` names it in errors.
SafetensorsFile parse_safetensors(const void* data, size_t size, const std::string& source);

}  // namespace mel
