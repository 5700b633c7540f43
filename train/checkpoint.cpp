#include "train/checkpoint.h"

#include <filesystem>

#include "core/safetensors.h"

namespace mel::train {

namespace {

std::map<std::string, std::string> metadata_of(const CheckpointInfo& info) {
  return {{"format", kCheckpointFormat},
          {"config", info.config_json},
          {"epoch", std::to_string(info.epoch)},
          {"step", std::to_string(info.step)}};
}

CheckpointInfo info_from(const SafetensorsFile& f, const std::string& path) {
  auto get = [&](const char* key) {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) {
      fail("{}: not a mel checkpoint (its metadata has no '{}' entry)", path, key);
    }
    return it->second;
  };
  const std::string format = get("format");
  MEL_CHECK(format == kCheckpointFormat, "{}: checkpoint format '{}' is not '{}'", path, format,
            kCheckpointFormat);
  CheckpointInfo info;
  info.config_json = get("config");
  try {
    info.epoch = std::stoll(get("epoch"));
    info.step = std::stoll(get("step"));
  } catch (const std::logic_error&) {
    fail("{}: checkpoint metadata 'epoch' / 'step' are not integers", path);
  }
  return info;
}

}  // namespace

std::string model_checkpoint_path(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return path + "/model.safetensors";
  return path;
}

void save_checkpoint(const std::string& dir, const nn::Module& model,
                     const nn::NamedTensors* optimizer_state, const CheckpointInfo& info) {
  const auto meta = metadata_of(info);
  // Each file is replaced atomically; both carry the epoch, so a reader can tell if a crash
  // fell between the two renames.
  if (optimizer_state) save_safetensors(dir + "/optimizer.safetensors", *optimizer_state, meta);
  save_safetensors(dir + "/model.safetensors", model.state_dict(), meta);
}

Checkpoint read_checkpoint(const std::string& path) {
  Checkpoint c;
  c.file = model_checkpoint_path(path);
  c.contents = load_safetensors(c.file);
  c.info = info_from(c.contents, c.file);
  return c;
}

void load_model_checkpoint(const Checkpoint& checkpoint, nn::Module& model) {
  try {
    model.load_state_dict(checkpoint.contents.tensors);
  } catch (const Error& e) {
    fail("{}: {}", checkpoint.file, e.what());
  }
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  return read_checkpoint(path).info;
}

void load_model_checkpoint(const std::string& path, nn::Module& model) {
  load_model_checkpoint(read_checkpoint(path), model);
}

nn::NamedTensors read_optimizer_checkpoint(const std::string& dir) {
  const std::string file = dir + "/optimizer.safetensors";
  SafetensorsFile f = load_safetensors(file);
  info_from(f, file);
  return std::move(f.tensors);
}

void load_optimizer_state(const std::string& dir, nn::Optimizer& opt,
                          const nn::NamedTensors& state) {
  try {
    opt.load_state(state);
  } catch (const Error& e) {
    fail("{}/optimizer.safetensors: {}", dir, e.what());
  }
}

}  // namespace mel::train
