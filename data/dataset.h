// In-memory labelled image datasets (u8 images, i64 labels) and load_dataset, which picks the
// reader (IDX for MNIST-like sets, binary records for CIFAR) from a dataset name.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace mel::data {

enum class Split { train, test };

const char* split_name(Split s);  // "train", "test"

struct ImageDataset {
  std::string name;      // "fashion-mnist", "mnist", "cifar10", "cifar100"
  Tensor images;         // u8 [N, C, H, W], contiguous
  Tensor labels;         // i64 [N]
  Tensor coarse_labels;  // i64 [N] (CIFAR-100 super-classes) or undefined
  int64_t num_classes = 0;
  int64_t num_coarse_classes = 0;
  int64_t size() const { return labels.defined() ? labels.numel() : 0; }
};

// Where the Debian package dataset-fashion-mnist installs the IDX files.
inline constexpr const char* kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";

// Names: "fashion-mnist", "mnist", "cifar10", "cifar100". An empty `dir` means the default
// location, which only Fashion-MNIST has; the others ask for a folder (--data).
ImageDataset load_dataset(const std::string& name, const std::string& dir, Split split);

}  // namespace mel::data
