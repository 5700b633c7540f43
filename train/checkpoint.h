// Run checkpoints: the model's state dict in model.safetensors (PyTorch names, config and
// progress in the metadata), the optimizer state in optimizer.safetensors, and checkpoint.json,
// the commit record naming both files with their sizes and XXH64 hashes and the epoch and step.
//
// Saving an epoch: both files are written (fsynced) as FILE.next, then checkpoint.json is replaced
// atomically (the commit point), then each FILE.next is renamed over FILE. A crash before the
// commit leaves the previous checkpoint intact; a crash after it leaves FILE.next files that match
// the record and are rolled forward on resume (readers accept either). Readers check every file
// against the record: a missing, truncated or other epoch's file is an error naming it, never a
// silent mix. A run folder without checkpoint.json (written by an older mel) is accepted with a
// warning; its model and optimizer files must still carry the same epoch and step.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "core/safetensors.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace mel::train {

inline constexpr const char* kCheckpointFormat = "mel-checkpoint-1";
inline constexpr const char* kCheckpointRecord = "checkpoint.json";

struct CheckpointInfo {
  std::string config_json;  // the run's config, overrides applied
  int64_t epoch = 0, step = 0;
};

// Saves one epoch's checkpoint in `dir` as described above: model.safetensors (the state dict)
// and, when given, optimizer.safetensors (an optimizer's state()), both with the run's metadata,
// committed by checkpoint.json. The caller must hold the folder (RunFolderLock).
// Test hook: the environment variable MEL_TEST_KILL_AT=POINT[@EPOCH] kills the process with
// SIGKILL at POINT (after_optimizer_write, after_model_write, after_commit,
// after_optimizer_rename, after_model_rename) of every save, or only of the save of EPOCH.
void save_checkpoint(const std::string& dir, const nn::Module& model,
                     const nn::NamedTensors* optimizer_state, const CheckpointInfo& info);
// True when `dir` holds a checkpoint (committed, or a model file of an older mel).
bool has_checkpoint(const std::string& dir);
// For the holder of `dir`: finishes a save that a crash interrupted after its commit (renames the
// committed FILE.next files into place) and removes staged and temporary files no record names.
void recover_checkpoint(const std::string& dir);
// For the holder of `dir` starting a new run there: removes the checkpoint, its staged and
// temporary files, metrics.jsonl and report.json.
void remove_run_files(const std::string& dir);

// A model checkpoint read once: its checked metadata and its tensors.
struct Checkpoint {
  std::string file;  // the file read (FILE.next when the rename after a commit was cut short)
  CheckpointInfo info;
  SafetensorsFile contents;
};
// A run folder or a .safetensors file; a model file in a folder with checkpoint.json is checked
// against that record (size, hash, epoch and step).
Checkpoint read_checkpoint(const std::string& path);
// Loads weights into `model`. Every tensor must match the model's name, dtype and shape (no
// conversion) and hold finite values: otherwise an error naming the file and every offending
// tensor with what was found and what was expected.
void load_model_checkpoint(const Checkpoint& checkpoint, nn::Module& model);

// The metadata of `path` (a run folder or a model .safetensors file), checked for our format.
CheckpointInfo read_checkpoint_info(const std::string& path);
void load_model_checkpoint(const std::string& path, nn::Module& model);
// The optimizer state stored in dir/optimizer.safetensors, checked against the record and against
// `model` (the info of the model checkpoint it is resumed with): files of different epochs are an
// error naming both.
nn::NamedTensors read_optimizer_checkpoint(const std::string& dir, const CheckpointInfo& model);
// Loads the state into an optimizer: names, dtypes and shapes must match its own state and the
// values be finite (a mismatch is an error naming the file and the tensors).
void load_optimizer_state(const std::string& dir, nn::Optimizer& opt,
                          const nn::NamedTensors& state);
// A run folder -> its model.safetensors; a file stays as it is.
std::string model_checkpoint_path(const std::string& path);

// XXH64 (seed 0) of a byte string, as 16 lowercase hex digits; and of a file's contents.
std::string xxh64_hex(const void* data, size_t size);
std::string file_xxh64_hex(const std::string& path);

}  // namespace mel::train
