// The simulator's cuda_runtime.h: the toolkit's header (types and the runtime API, as any host
// compiler sees them), then the simulated device side (cudasim/device.h). Only the simulator's
// kernel sources have this folder on their include path.
#pragma once
#include_next <cuda_runtime.h>

#include "cudasim/device.h"
