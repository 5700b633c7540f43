// In-memory labelled datasets (u8 images or f32 features, i64 labels) and load_dataset, which picks
// the reader (IDX for MNIST-like sets, binary records for CIFAR, WAV clips turned into log-mel
// features for spoken words) from a dataset name.
#pragma once
#include <cstdint>
#include <string>

#include <vector>

#include "core/tensor.h"
#include "data/logmel.h"

namespace mel::data {

enum class Split { train, validation, test };

const char* split_name(Split s);  // "train", "validation", "test"

struct ImageDataset {
  std::string name;      // "fashion-mnist", "mnist", "cifar10", "cifar100", "spoken-words"
  Tensor images;         // u8 [N, C, H, W] images or f32 [N, C, H, W] features, contiguous
  Tensor labels;         // i64 [N]
  Tensor coarse_labels;  // i64 [N] (CIFAR-100 super-classes) or undefined
  int64_t num_classes = 0;
  int64_t num_coarse_classes = 0;
  std::vector<std::string> class_names;  // [num_classes] where the data names them, else empty
  std::vector<std::string> speakers;     // [N]: who speaks each clip (spoken words), else empty
  int64_t size() const { return labels.defined() ? labels.numel() : 0; }
};

// Where the Debian package dataset-fashion-mnist installs the IDX files.
inline constexpr const char* kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";

// How spoken-word clips become features (the other datasets have no options).
struct SpeechOptions {
  LogMelOptions features;
  int64_t clip_samples = 16000;  // one second at 16 kHz
  bool cache = true;             // keep the features in DIR/.cache (computed once per options)
};

struct DatasetOptions {
  SpeechOptions speech;
};

// Names: "fashion-mnist", "mnist", "cifar10", "cifar100", "spoken-words". An empty `dir` means the
// default location, which Fashion-MNIST (its Debian package) and spoken words (where
// scripts/make_spoken_words.sh writes them) have; the others ask for a folder (--data). Only
// spoken words have a validation split.
ImageDataset load_dataset(const std::string& name, const std::string& dir, Split split,
                          const DatasetOptions& options = {});

}  // namespace mel::data
