// Element types (DType), their sizes and names, the C++ type of each, and dispatch helpers that
// turn a runtime DType into a compile-time type for a kernel call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "core/error.h"
#include "kernels/half.h"

namespace mel {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, u8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
DType parse_dtype(std::string_view name);  // "f32", "float32", ...
inline bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}
inline bool is_half(DType t) {
  return t == DType::bf16 || t == DType::f16;
}
inline bool is_integral(DType t) {
  return !is_floating(t);
}

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct dtype_of<bfloat16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct dtype_of<half> {
  static constexpr DType value = DType::f16;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::i64;
};
template <>
struct dtype_of<uint8_t> {
  static constexpr DType value = DType::u8;
};
template <class T>
inline constexpr DType dtype_v = dtype_of<T>::value;

template <class T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with T the C++ type of `t`; throws naming `op` for types not listed.
template <class F>
decltype(auto) dispatch_all(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32:
      return f(TypeTag<float>{});
    case DType::f64:
      return f(TypeTag<double>{});
    case DType::bf16:
      return f(TypeTag<bfloat16>{});
    case DType::f16:
      return f(TypeTag<half>{});
    case DType::i32:
      return f(TypeTag<int32_t>{});
    case DType::i64:
      return f(TypeTag<int64_t>{});
    case DType::u8:
      return f(TypeTag<uint8_t>{});
  }
  fail("{}: unknown dtype code {}", op, static_cast<int>(t));
}

// f32 and f64 only: the types the CPU math kernels are compiled for.
template <class F>
decltype(auto) dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32:
      return f(TypeTag<float>{});
    case DType::f64:
      return f(TypeTag<double>{});
    default:
      break;
  }
  fail("{}: dtype {} is not supported (expected f32 or f64)", op, dtype_name(t));
}

// f32, f64, i32, i64: arithmetic and reductions.
template <class F>
decltype(auto) dispatch_numeric(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32:
      return f(TypeTag<float>{});
    case DType::f64:
      return f(TypeTag<double>{});
    case DType::i32:
      return f(TypeTag<int32_t>{});
    case DType::i64:
      return f(TypeTag<int64_t>{});
    default:
      break;
  }
  fail("{}: dtype {} is not supported (expected f32, f64, i32 or i64)", op, dtype_name(t));
}

// f32, f64, bf16, f16: ops whose kernels take every floating type natively (GPU matmul and
// convolution; their CPU ops compute the 16-bit types in f32).
template <class F>
decltype(auto) dispatch_floating(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32:
      return f(TypeTag<float>{});
    case DType::f64:
      return f(TypeTag<double>{});
    case DType::bf16:
      return f(TypeTag<bfloat16>{});
    case DType::f16:
      return f(TypeTag<half>{});
    default:
      break;
  }
  fail("{}: dtype {} is not supported (expected f32, f64, bf16 or f16)", op, dtype_name(t));
}

}  // namespace mel
