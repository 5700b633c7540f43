// mel::Error and the checking helpers every layer uses to reject bad input with a message that
// names the operation, the shapes or values involved and what was expected.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "kernels/error.h"

namespace mel {

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

using Shape = std::vector<int64_t>;

// "[2, 3, 4]"
std::string shape_str(const Shape& s);

}  // namespace mel

#define MEL_CHECK(cond, ...)               \
  do {                                     \
    if (!(cond)) ::mel::fail(__VA_ARGS__); \
  } while (0)
