// Status checks for the CUDA runtime, cuBLAS(Lt) and cuDNN: each failure throws mel::Error naming
// the library, the call, file:line and the library's own error string. Host code only.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <string>

#include "kernels/error.h"

namespace mel::kernels::cuda {

[[noreturn]] inline void throw_status(const char* lib, int code, const char* text, const char* expr,
                                      const char* file, int line) {
  throw Error(std::string(lib) + " error " + std::to_string(code) + " (" + text + ") in " + expr +
              " at " + file + ":" + std::to_string(line));
}

inline const char* cublas_status_text(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "architecture mismatch";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "not supported";
    default:
      return "unknown status";
  }
}

}  // namespace mel::kernels::cuda

#define MEL_CUDA_CHECK(expr)                                                               \
  do {                                                                                     \
    cudaError_t mel_status_ = (expr);                                                      \
    if (mel_status_ != cudaSuccess) {                                                      \
      ::mel::kernels::cuda::throw_status("CUDA", static_cast<int>(mel_status_),            \
                                         cudaGetErrorString(mel_status_), #expr, __FILE__, \
                                         __LINE__);                                        \
    }                                                                                      \
  } while (0)

#define MEL_CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                          \
    cublasStatus_t mel_status_ = (expr);                                                        \
    if (mel_status_ != CUBLAS_STATUS_SUCCESS) {                                                 \
      ::mel::kernels::cuda::throw_status("cuBLAS", static_cast<int>(mel_status_),               \
                                         ::mel::kernels::cuda::cublas_status_text(mel_status_), \
                                         #expr, __FILE__, __LINE__);                            \
    }                                                                                           \
  } while (0)

#define MEL_CUDNN_CHECK(expr)                                                               \
  do {                                                                                      \
    cudnnStatus_t mel_status_ = (expr);                                                     \
    if (mel_status_ != CUDNN_STATUS_SUCCESS) {                                              \
      ::mel::kernels::cuda::throw_status("cuDNN", static_cast<int>(mel_status_),            \
                                         cudnnGetErrorString(mel_status_), #expr, __FILE__, \
                                         __LINE__);                                         \
    }                                                                                       \
  } while (0)

// After a kernel launch: reports a bad launch configuration at once (does not synchronise).
#define MEL_CUDA_CHECK_LAUNCH() MEL_CUDA_CHECK(cudaGetLastError())
