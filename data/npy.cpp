#include "data/npy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/json_reader.h"
#include "kernels/strided.h"

namespace mel::data {
namespace {

const char* descr_of(DType d) {
  switch (d) {
    case DType::f32:
      return "<f4";
    case DType::f64:
      return "<f8";
    case DType::i32:
      return "<i4";
    case DType::i64:
      return "<i8";
    case DType::u8:
      return "|u1";
    default:
      return nullptr;
  }
}

// The value of `key` in the header's Python dict literal, up to the next top-level ',' or '}'.
std::string field(const std::string& header, const std::string& key, const std::string& source) {
  const std::string quoted = "'" + key + "'";
  size_t p = header.find(quoted);
  MEL_CHECK(p != std::string::npos, "{}: the .npy header has no '{}' field: {}", source, key,
            text_excerpt(header));
  p = header.find(':', p + quoted.size());
  MEL_CHECK(p != std::string::npos, "{}: the .npy header's '{}' has no value", source, key);
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  size_t end = p;
  int depth = 0;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  return header.substr(p, end - p);
}

}  // namespace

std::string npy_bytes(const Tensor& t) {
  const char* descr = descr_of(t.dtype());
  MEL_CHECK(descr, "npy: {} tensors cannot be written (f32, f64, i32, i64 or u8)",
            dtype_name(t.dtype()));
  MEL_CHECK(t.device().is_cpu(), "npy: the tensor must be on the CPU");
  const Tensor c = t.contiguous();
  // NumPy's tuples: "()", "(3,)", "(3, 4)"
  std::string shape = fmt::format("{}", fmt::join(c.shape(), ", "));
  if (c.dim() == 1) shape += ",";
  std::string header =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, shape);
  // magic (6) + version (2) + length (2) + header + '\n', padded with spaces to 64 bytes; a
  // header too long for version 1.0's 2-byte length (thousands of dimensions) is written as
  // version 2.0, whose length has 4 bytes, as NumPy does.
  const bool v2 = 10 + header.size() + 1 > 65535;
  const size_t prefix = v2 ? 12 : 10;
  const size_t unpadded = prefix + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  MEL_CHECK(header.size() <= 0xffffffffu, "npy: a header of {} bytes is too long", header.size());
  std::string out = "\x93NUMPY";
  out += static_cast<char>(v2 ? 2 : 1);
  out += '\x00';
  for (size_t i = 0; i < prefix - 8; ++i)
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  out += header;
  out.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return out;
}

Tensor parse_npy(const std::string& bytes, const std::string& source) {
  MEL_CHECK(bytes.size() >= 10 && bytes.compare(0, 6, "\x93NUMPY") == 0,
            "{}: not a .npy file (no \\x93NUMPY magic)", source);
  const int major = static_cast<unsigned char>(bytes[6]);
  MEL_CHECK(major >= 1 && major <= 3, "{}: .npy format version {} (1 to 3 are read)", source,
            major);
  size_t len = 0, start = 0;
  if (major == 1) {
    len = static_cast<unsigned char>(bytes[8]) |
          static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8;
    start = 10;
  } else {
    MEL_CHECK(bytes.size() >= 12, "{}: the .npy file ends inside its header length", source);
    for (int i = 3; i >= 0; --i) len = len << 8 | static_cast<unsigned char>(bytes[8 + i]);
    start = 12;
  }
  MEL_CHECK(bytes.size() >= start + len, "{}: the .npy file ends inside its header ({} bytes)",
            source, len);
  const std::string header = bytes.substr(start, len);
  const std::string descr = field(header, "descr", source);
  DType dtype = DType::f32;
  bool found = false;
  for (DType d : {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8}) {
    if (descr == fmt::format("'{}'", descr_of(d)) ||
        (d == DType::u8 && (descr == "'<u1'" || descr == "'u1'"))) {
      dtype = d;
      found = true;
    }
  }
  MEL_CHECK(found,
            "{}: descr {} is not read (f32 '<f4', f64 '<f8', i32 '<i4', i64 '<i8', u8 '|u1')",
            source, text_excerpt(descr));
  MEL_CHECK(field(header, "fortran_order", source) == "False",
            "{}: fortran_order is True; write the array in C order (np.ascontiguousarray)", source);
  std::string shape_text = field(header, "shape", source);
  MEL_CHECK(shape_text.size() >= 2 && shape_text.front() == '(' && shape_text.back() == ')',
            "{}: the shape {} is not a tuple", source, text_excerpt(shape_text));
  Shape shape;
  std::istringstream in(shape_text.substr(1, shape_text.size() - 2));
  std::string part;
  while (std::getline(in, part, ',')) {
    const size_t a = part.find_first_not_of(' '), b = part.find_last_not_of(' ');
    if (a == std::string::npos) continue;
    const std::string num = part.substr(a, b - a + 1);
    MEL_CHECK(num.find_first_not_of("0123456789") == std::string::npos && num.size() < 16,
              "{}: the shape {} has a bad dimension '{}'", source, text_excerpt(shape_text),
              text_excerpt(num));
    shape.push_back(std::stoll(num));
  }
  MEL_CHECK(shape.size() <= static_cast<size_t>(kernels::kMaxDims),
            "{}: the shape {} has {} dimensions (at most {} are supported)", source,
            text_excerpt(shape_text), shape.size(), kernels::kMaxDims);
  // The byte count the shape needs, checked against the data before anything is allocated;
  // span (sizes with 0 counted as 1) bounds the strides even of an empty array.
  constexpr uint64_t kMaxBytes = uint64_t{1} << 62;
  uint64_t need = dtype_size(dtype), span = dtype_size(dtype);
  for (const int64_t d : shape) {
    const uint64_t v = static_cast<uint64_t>(d), f = std::max<uint64_t>(v, 1);
    MEL_CHECK(span <= kMaxBytes / f, "{}: the shape {} is too large (more than 2^62 bytes)", source,
              text_excerpt(shape_text));
    span *= f;
    need *= v;
  }
  const size_t data = start + len;
  MEL_CHECK(bytes.size() - data == need, "{}: {} bytes of data for {} {} ({} bytes expected)",
            source, bytes.size() - data, dtype_name(dtype), text_excerpt(shape_str(shape)), need);
  Tensor t = empty(shape, dtype);
  if (need) std::memcpy(t.data_ptr(), bytes.data() + data, need);
  return t;
}

Tensor load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MEL_CHECK(f, "{}: cannot open the .npy file", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_npy(ss.str(), path);
}

}  // namespace mel::data
