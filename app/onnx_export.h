// ONNX export of a MEL ensemble's servers (`mel export RUN --format onnx`): one ModelProto per
// upstream model (input x, outputs exit_logits and features) and one for the combination server
// (inputs features_1..features_M, one output per head). Built with the ONNX protobuf classes of
// libonnx-dev and checked with onnx::checker before it is written; opset 13, the batch dimension
// symbolic ("N"), eval-mode semantics (batch norm with its running statistics, dropout as
// identity). Without libonnx-dev at build time (MEL_WITH_ONNX off) every writer is an error saying
// so.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "mel/ensemble.h"

namespace mel::app {

// Whether this mel was built with ONNX export.
bool onnx_export_available();

// Key/value pairs for a model's metadata_props.
using OnnxMetadata = std::vector<std::pair<std::string, std::string>>;

// The ONNX opset the exporter targets.
inline constexpr int kOnnxOpset = 13;

// upstream_<i>.onnx: input "x" f32 [N, ...input_shape] (normalised as mel's data loader does),
// outputs "exit_logits" [N, exit_classes] and "features" [N, ...feature_shape]. The model is
// switched to eval mode for the export and back. A layer without an ONNX conversion is an error
// naming its type and its index in the backbone or exit.
void write_upstream_onnx(method::Upstream& upstream, const Shape& input_shape,
                         const OnnxMetadata& metadata, const std::string& path);

// combination.onnx: inputs "features_1".."features_M" (each upstream's features), one output
// "head_<subset>" (e.g. "head_1+2") per head, in the ensemble's head order.
void write_combination_onnx(method::Ensemble& model, const OnnxMetadata& metadata,
                            const std::string& path);

}  // namespace mel::app
