// NumPy's .npy format (versions 1.0 to 3.0, C order): what `mel predict` writes, and reads as
// input. Little-endian f32, f64, i32, i64 and u8 arrays (NumPy's '<f4', '<f8', '<i4', '<i8',
// '|u1'); anything else is an error naming the file and the field.
#pragma once
#include <string>

#include "core/tensor.h"

namespace mel::data {

// The whole file's bytes (version 1.0 header, or 2.0 when the header is over 64 KiB; 64-byte
// aligned) for a CPU tensor of a supported dtype; the caller writes them (atomically).
std::string npy_bytes(const Tensor& t);

// Reads `path` into a contiguous CPU tensor of the file's dtype and shape.
Tensor load_npy(const std::string& path);
// The same from bytes already read; `source` names them in errors.
Tensor parse_npy(const std::string& bytes, const std::string& source);

}  // namespace mel::data
