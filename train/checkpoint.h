// Run checkpoints: the model's state dict in model.safetensors (PyTorch names, config and
// progress in the metadata) and the optimizer state in optimizer.safetensors.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "core/safetensors.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace mel::train {

inline constexpr const char* kCheckpointFormat = "mel-checkpoint-1";

struct CheckpointInfo {
  std::string config_json;  // the run's config, overrides applied
  int64_t epoch = 0, step = 0;
};

// model.safetensors (the state dict) and, when given, optimizer.safetensors (an optimizer's
// state()), both with the run's metadata.
void save_checkpoint(const std::string& dir, const nn::Module& model,
                     const nn::NamedTensors* optimizer_state, const CheckpointInfo& info);
// A model checkpoint read once: its checked metadata and its tensors.
struct Checkpoint {
  std::string file;
  CheckpointInfo info;
  SafetensorsFile contents;
};
Checkpoint read_checkpoint(const std::string& path);  // a run folder or a .safetensors file
void load_model_checkpoint(const Checkpoint& checkpoint, nn::Module& model);

// The metadata of `path` (a run folder or a model .safetensors file), checked for our format.
CheckpointInfo read_checkpoint_info(const std::string& path);
// Loads weights into `model`; a missing, unexpected or mis-shaped tensor is an error naming the
// file and every offending tensor.
void load_model_checkpoint(const std::string& path, nn::Module& model);
// The optimizer state stored in dir/optimizer.safetensors (metadata checked), and loading it into
// an optimizer (a mismatch is an error naming the file).
nn::NamedTensors read_optimizer_checkpoint(const std::string& dir);
void load_optimizer_state(const std::string& dir, nn::Optimizer& opt,
                          const nn::NamedTensors& state);
// A run folder -> its model.safetensors; a file stays as it is.
std::string model_checkpoint_path(const std::string& path);

}  // namespace mel::train
