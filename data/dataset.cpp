#include "data/dataset.h"

#include "core/error.h"
#include "data/cifar.h"
#include "data/idx.h"

namespace mel::data {

const char* split_name(Split s) {
  return s == Split::train ? "train" : "test";
}

ImageDataset load_dataset(const std::string& name, const std::string& dir, Split split) {
  const bool known =
      name == "fashion-mnist" || name == "mnist" || name == "cifar10" || name == "cifar100";
  MEL_CHECK(known, "unknown dataset '{}' (expected fashion-mnist, mnist, cifar10 or cifar100)",
            name);
  if (name == "fashion-mnist") {
    return load_fashion_mnist(dir.empty() ? kFashionMnistDefaultDir : dir, split);
  }
  MEL_CHECK(!dir.empty(), "dataset '{}' has no default location: pass its folder with --data",
            name);
  if (name == "mnist") return load_mnist(dir, split);
  if (name == "cifar10") return load_cifar10(dir, split);
  return load_cifar100(dir, split);
}

}  // namespace mel::data
