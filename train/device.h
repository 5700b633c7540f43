// Where a run's work happens: the device a command asks for (checked to exist), the device a
// module lives on, and a one-line description for logs (GPU name, or CPU threads and GEMM).
#pragma once
#include <string>

#include "core/device.h"
#include "nn/module.h"

namespace mel::train {

// Parsed and checked to exist; `command` names the command in the error.
Device run_device(const std::string& spec, const char* command);
// The device of a module's first parameter (the CPU for a module without parameters).
Device module_device(const nn::Module& m);
// The GPU's name, or the CPU threads and GEMM backend.
std::string compute_description(Device d);

}  // namespace mel::train
