#include "data/cifar.h"

#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "data/io.h"

namespace mel::data {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kPixels = 3 * 32 * 32;

struct Format {
  const char* pretty;   // "CIFAR-10"
  const char* name;     // "cifar10"
  const char* subdir;   // folder name inside the official archive
  int64_t label_bytes;  // 1 (label) or 2 (coarse, fine)
  int64_t num_classes;
  int64_t num_coarse;
};

constexpr Format kCifar10{"CIFAR-10", "cifar10", "cifar-10-batches-bin", 1, 10, 0};
constexpr Format kCifar100{"CIFAR-100", "cifar100", "cifar-100-binary", 2, 100, 20};

// The folder holding the .bin files: `dir` itself or the archive's folder inside it.
std::string resolve_dir(const std::string& dir, const Format& fmt_, const std::string& probe) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    fail("{} folder '{}' {}; pass the folder holding {} (or its parent) with --data", fmt_.pretty,
         dir, fs::exists(dir, ec) ? "is not a directory" : "does not exist", probe);
  }
  if (!fs::exists(fs::path(dir) / probe, ec) && fs::is_directory(fs::path(dir) / fmt_.subdir, ec)) {
    return (fs::path(dir) / fmt_.subdir).string();
  }
  return dir;
}

// The records of every file (contents[k], named paths[k]) as one data set.
ImageDataset records_to_dataset(const std::vector<const std::vector<uint8_t>*>& contents,
                                const std::vector<std::string>& paths, const Format& f) {
  const int64_t record = f.label_bytes + kPixels;
  int64_t total = 0;
  for (size_t k = 0; k < contents.size(); ++k) {
    const std::vector<uint8_t>& bytes = *contents[k];
    const std::string& path = paths[k];
    const int64_t size = static_cast<int64_t>(bytes.size());
    MEL_CHECK(size > 0, "'{}': empty file (expected {}-byte {} records)", path, record, f.pretty);
    MEL_CHECK(size % record == 0,
              "'{}': size {} bytes is not a multiple of the {}-byte {} record size (truncated, "
              "or not a {} binary file; {} whole records and {} bytes left over)",
              path, size, record, f.pretty, f.pretty, size / record, size % record);
    total += size / record;
  }

  ImageDataset ds;
  ds.name = f.name;
  ds.num_classes = f.num_classes;
  ds.num_coarse_classes = f.num_coarse;
  ds.images = empty({total, 3, 32, 32}, DType::u8);
  ds.labels = empty({total}, DType::i64);
  if (f.num_coarse > 0) ds.coarse_labels = empty({total}, DType::i64);
  uint8_t* img = ds.images.data<uint8_t>();
  int64_t* lbl = ds.labels.data<int64_t>();
  int64_t* coarse = f.num_coarse > 0 ? ds.coarse_labels.data<int64_t>() : nullptr;
  int64_t at = 0;
  for (size_t k = 0; k < contents.size(); ++k) {
    const uint8_t* p = contents[k]->data();
    const int64_t n = static_cast<int64_t>(contents[k]->size()) / record;
    for (int64_t r = 0; r < n; ++r, ++at, p += record) {
      if (coarse) {
        MEL_CHECK(p[0] < f.num_coarse,
                  "'{}': record {} has coarse label {}, out of range (expected 0..{})", paths[k], r,
                  p[0], f.num_coarse - 1);
        coarse[at] = p[0];
      }
      const uint8_t label = p[f.label_bytes - 1];
      MEL_CHECK(label < f.num_classes,
                "'{}': record {} has {}label {}, out of range (expected 0..{})", paths[k], r,
                coarse ? "fine " : "", label, f.num_classes - 1);
      lbl[at] = label;
      std::memcpy(img + at * kPixels, p + f.label_bytes, kPixels);
    }
  }
  return ds;
}

ImageDataset load_records(const std::string& dir, const std::vector<std::string>& files,
                          const Format& f) {
  std::vector<std::vector<uint8_t>> contents;
  std::vector<std::string> paths;
  for (const std::string& file : files) {
    const std::string path = (fs::path(dir) / file).string();
    std::error_code ec;
    MEL_CHECK(fs::exists(path, ec), "{}: missing file '{}'", f.pretty, path);
    contents.push_back(read_file(path));
    paths.push_back(path);
  }
  std::vector<const std::vector<uint8_t>*> views;
  for (const auto& c : contents) views.push_back(&c);
  return records_to_dataset(views, paths, f);
}

}  // namespace

ImageDataset load_cifar10(const std::string& dir, Split split) {
  std::vector<std::string> files;
  if (split == Split::train) {
    for (int i = 1; i <= 5; ++i) files.push_back(fmt::format("data_batch_{}.bin", i));
  } else {
    files.push_back("test_batch.bin");
  }
  return load_records(resolve_dir(dir, kCifar10, files[0]), files, kCifar10);
}

ImageDataset load_cifar100(const std::string& dir, Split split) {
  const std::vector<std::string> files = {split == Split::train ? "train.bin" : "test.bin"};
  return load_records(resolve_dir(dir, kCifar100, files[0]), files, kCifar100);
}

ImageDataset parse_cifar10(const std::vector<uint8_t>& bytes, const std::string& source) {
  return records_to_dataset({&bytes}, {source}, kCifar10);
}

ImageDataset parse_cifar100(const std::vector<uint8_t>& bytes, const std::string& source) {
  return records_to_dataset({&bytes}, {source}, kCifar100);
}

}  // namespace mel::data
