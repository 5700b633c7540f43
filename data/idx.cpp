#include "data/idx.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "data/io.h"
#include "kernels/strided.h"

namespace mel::data {

namespace {

namespace fs = std::filesystem;

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string pretty_name(const std::string& name) {
  if (name == "fashion-mnist") return "Fashion-MNIST";
  if (name == "mnist") return "MNIST";
  return name;
}

// The folder must exist; for Fashion-MNIST the message says where the Debian package puts it.
void check_dir(const std::string& dir, const std::string& name) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return;
  const bool exists = fs::exists(dir, ec);
  std::string hint;
  if (name == "fashion-mnist") {
    hint = fmt::format(
        "; the Debian package `dataset-fashion-mnist` provides it under {} (apt-get install "
        "dataset-fashion-mnist), or pass the folder holding the IDX files with --data",
        kFashionMnistDefaultDir);
  } else {
    hint =
        "; pass the folder holding the IDX files (train-images-idx3-ubyte[.gz], ...) with --data";
  }
  fail("{} folder '{}' {}{}", pretty_name(name), dir,
       exists ? "is not a directory" : "does not exist", hint);
}

// `dir/base.gz` when present, else `dir/base`.
std::string find_idx_file(const std::string& dir, const std::string& base,
                          const std::string& name) {
  std::error_code ec;
  const std::string gz = (fs::path(dir) / (base + ".gz")).string();
  const std::string raw = (fs::path(dir) / base).string();
  if (fs::exists(gz, ec)) return gz;
  if (fs::exists(raw, ec)) return raw;
  fail("{}: missing file '{}' (nor the uncompressed '{}')", pretty_name(name), gz, raw);
}

}  // namespace

Tensor read_idx(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  return parse_idx(bytes.data(), bytes.size(), path);
}

Tensor parse_idx(const uint8_t* bytes, size_t size, const std::string& path) {
  MEL_CHECK(size >= 4, "'{}': truncated IDX file: {} bytes, too short for the 4-byte magic number",
            path, size);
  const uint32_t magic = read_be32(bytes);
  MEL_CHECK(bytes[0] == 0 && bytes[1] == 0 && bytes[3] >= 1,
            "'{}': wrong magic number 0x{:08X}: not an IDX file (expected 0x00000801 for labels "
            "or 0x00000803 for images)",
            path, magic);
  MEL_CHECK(bytes[2] == 0x08,
            "'{}': magic number 0x{:08X} declares element type 0x{:02X}; only unsigned bytes "
            "(0x08, magic 0x000008NN) are supported",
            path, magic, bytes[2]);
  const size_t ndim = bytes[3];
  MEL_CHECK(ndim <= static_cast<size_t>(kernels::kMaxDims),
            "'{}': magic number 0x{:08X} declares {} dimensions (at most {} are supported)", path,
            magic, ndim, kernels::kMaxDims);
  const size_t header = 4 + 4 * ndim;
  MEL_CHECK(size >= header,
            "'{}': truncated IDX file: {} bytes, too short for the header of {} dimensions ({} "
            "bytes)",
            path, size, ndim, header);
  Shape dims(ndim);
  // need: the data bytes; span: the product with 0 counted as 1, which bounds the strides of the
  // tensor even when one dimension is 0 (dims of 2^32 - 1 overflow int64 after three).
  uint64_t need = 1, span = 1;
  bool overflow = false;
  for (size_t d = 0; d < ndim; ++d) {
    dims[d] = read_be32(bytes + 4 + 4 * d);
    const uint64_t v = static_cast<uint64_t>(dims[d]);
    if (span > (uint64_t{1} << 62) / std::max<uint64_t>(v, 1)) overflow = true;
    if (overflow) continue;
    span *= std::max<uint64_t>(v, 1);
    need *= v;
  }
  const uint64_t have = size - header;
  MEL_CHECK(!overflow && need <= have,
            "'{}': truncated or inconsistent IDX file: dims {} need {} data bytes but the file has "
            "{} after the header (the dims do not match the file size)",
            path, shape_str(dims), overflow ? std::string("too many") : std::to_string(need), have);
  MEL_CHECK(need == have,
            "'{}': dims {} need {} data bytes but the file has {} after the header (the dims do "
            "not match the file size: {} unexpected trailing bytes)",
            path, shape_str(dims), need, have, have - need);
  Tensor t = empty(dims, DType::u8);
  if (need > 0) std::memcpy(t.data_ptr(), bytes + header, need);
  return t;
}

ImageDataset load_mnist_like(const std::string& dir, Split split, const std::string& name) {
  check_dir(dir, name);
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const std::string img_path = find_idx_file(dir, prefix + "-images-idx3-ubyte", name);
  const std::string lbl_path = find_idx_file(dir, prefix + "-labels-idx1-ubyte", name);

  Tensor images = read_idx(img_path);
  MEL_CHECK(images.dim() == 3,
            "'{}': expected an IDX image file (magic 0x00000803, dims [N, rows, cols]) but it has "
            "{} dimension(s) {}",
            img_path, images.dim(), shape_str(images.shape()));
  Tensor raw_labels = read_idx(lbl_path);
  MEL_CHECK(raw_labels.dim() == 1,
            "'{}': expected an IDX label file (magic 0x00000801, dims [N]) but it has {} "
            "dimension(s) {}",
            lbl_path, raw_labels.dim(), shape_str(raw_labels.shape()));
  const int64_t n = images.size(0);
  MEL_CHECK(raw_labels.size(0) == n,
            "{}: image/label count mismatch: '{}' has {} images but '{}' has {} labels",
            pretty_name(name), img_path, n, lbl_path, raw_labels.size(0));

  ImageDataset ds;
  ds.name = name;
  ds.num_classes = 10;
  ds.images = images.view({n, 1, images.size(1), images.size(2)});
  ds.labels = empty({n}, DType::i64);
  const uint8_t* src = raw_labels.data<uint8_t>();
  int64_t* dst = ds.labels.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    MEL_CHECK(src[i] < 10, "'{}': label {} of sample {} is out of range (expected 0..9)", lbl_path,
              src[i], i);
    dst[i] = src[i];
  }
  return ds;
}

ImageDataset load_fashion_mnist(const std::string& dir, Split split) {
  return load_mnist_like(dir, split, "fashion-mnist");
}

ImageDataset load_mnist(const std::string& dir, Split split) {
  return load_mnist_like(dir, split, "mnist");
}

}  // namespace mel::data
