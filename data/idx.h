// The IDX format of MNIST and Fashion-MNIST (big-endian header: 0x00 0x00 type ndims, then one
// u32 per dimension, then the data) and the loaders for the two data sets built on it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "data/dataset.h"

namespace mel::data {

// A whole IDX file (gunzipped when the name ends in ".gz") as a u8 tensor with the file's dims.
// Only unsigned-byte files (type 0x08) are supported: magic 0x00000801 for labels, 0x00000803 for
// images. The dims must account for every byte of the file.
Tensor read_idx(const std::string& path);
// The same from a whole (already decompressed) file in memory; `source` names it in errors.
Tensor parse_idx(const uint8_t* data, size_t size, const std::string& source);

// train-images-idx3-ubyte / train-labels-idx1-ubyte (t10k-* for the test split) from `dir`, each
// gzipped (".gz", preferred) or raw. Images come back as [N, 1, H, W]; labels must be < 10.
ImageDataset load_mnist_like(const std::string& dir, Split split, const std::string& name);
ImageDataset load_fashion_mnist(const std::string& dir, Split split);  // name "fashion-mnist"
ImageDataset load_mnist(const std::string& dir, Split split);          // name "mnist"

}  // namespace mel::data
