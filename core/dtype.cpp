#include "core/dtype.h"

#include <string>

namespace mel {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::f64:
      return 8;
    case DType::bf16:
      return 2;
    case DType::f16:
      return 2;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
    case DType::u8:
      return 1;
  }
  fail("dtype_size: unknown dtype code {}", static_cast<int>(t));
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::f64:
      return "f64";
    case DType::bf16:
      return "bf16";
    case DType::f16:
      return "f16";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
    case DType::u8:
      return "u8";
  }
  return "unknown";
}

DType parse_dtype(std::string_view name) {
  struct Entry {
    const char* a;
    const char* b;
    DType t;
  };
  static constexpr Entry kNames[] = {
      {"f32", "float32", DType::f32},    {"f64", "float64", DType::f64},
      {"bf16", "bfloat16", DType::bf16}, {"f16", "float16", DType::f16},
      {"i32", "int32", DType::i32},      {"i64", "int64", DType::i64},
      {"u8", "uint8", DType::u8}};
  for (const auto& e : kNames) {
    if (name == e.a || name == e.b) return e.t;
  }
  fail("parse_dtype: unknown dtype '{}' (expected one of f32, f64, bf16, f16, i32, i64, u8)",
       std::string(name));
}

}  // namespace mel
