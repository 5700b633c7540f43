// mel::Error, the exception every layer throws for bad input or a failed library call. It lives in
// kernels/ so that CUDA kernel launchers, which never include core headers, throw the same type.
#pragma once
#include <stdexcept>

namespace mel {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace mel
