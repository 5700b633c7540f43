#include "core/error.h"

namespace mel {

std::string shape_str(const Shape& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

}  // namespace mel
