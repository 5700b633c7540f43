#include "data/dataset.h"

#include "core/error.h"
#include "data/cifar.h"
#include "data/idx.h"
#include "data/speech.h"

namespace mel::data {

const char* split_name(Split s) {
  switch (s) {
    case Split::train:
      return "train";
    case Split::validation:
      return "validation";
    case Split::test:
      return "test";
  }
  return "?";
}

ImageDataset load_dataset(const std::string& name, const std::string& dir, Split split,
                          const DatasetOptions& options) {
  const bool known = name == "fashion-mnist" || name == "mnist" || name == "cifar10" ||
                     name == "cifar100" || name == kSpokenWordsName;
  MEL_CHECK(known,
            "unknown dataset '{}' (expected fashion-mnist, mnist, cifar10, cifar100 or "
            "spoken-words)",
            name);
  if (name == kSpokenWordsName) {
    return load_spoken_words(dir.empty() ? spoken_words_default_dir() : dir, split, options.speech);
  }
  MEL_CHECK(split != Split::validation,
            "dataset '{}' has no validation split (only train and test)", name);
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
