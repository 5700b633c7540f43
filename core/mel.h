// The public C++ API of mel's core in one include: tensors, factories, autograd and every op.
// Include narrower headers where compile time matters.
#pragma once
#include "core/autograd.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/factory.h"
#include "core/ops_conv.h"
#include "core/ops_elementwise.h"
#include "core/ops_index.h"
#include "core/ops_linalg.h"
#include "core/ops_nn.h"
#include "core/ops_norm.h"
#include "core/ops_norm_fused.h"
#include "core/ops_reduce.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "core/tensor.h"
