#include <algorithm>

#include "data/idx.h"
#include "data/io.h"
#include "data/transforms.h"
#include "data_testing.h"
#include "gradcheck.h"

namespace mel::data {
namespace {

using namespace mel::data::testing;

Bytes tensor_bytes(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.contiguous().data_ptr());
  return Bytes(p, p + t.numel());
}

TEST(Idx, ReadsRawAndGzipFilesExactly) {
  TempDir dir;
  const Bytes data = pattern(5 * 3 * 4, 1);
  const Bytes file = idx_file({5, 3, 4}, data);
  write_file(dir.file("x-idx3-ubyte"), file);
  write_file(dir.file("x-idx3-ubyte.gz"), gzip(file));
  for (const char* name : {"x-idx3-ubyte", "x-idx3-ubyte.gz"}) {
    Tensor t = read_idx(dir.file(name));
    EXPECT_EQ(t.dtype(), DType::u8) << name;
    EXPECT_EQ(t.shape(), (Shape{5, 3, 4})) << name;
    EXPECT_EQ(tensor_bytes(t), data) << name;
  }
  // Labels (1 dim), and a file of two concatenated gzip members followed by zero padding.
  const Bytes labels = idx_file({7}, {0, 1, 2, 9, 3, 3, 8});
  Bytes two = gzip(Bytes(labels.begin(), labels.begin() + 5));
  const Bytes second = gzip(Bytes(labels.begin() + 5, labels.end()));
  two.insert(two.end(), second.begin(), second.end());
  two.insert(two.end(), 4, 0);
  write_file(dir.file("l.gz"), two);
  Tensor l = read_idx(dir.file("l.gz"));
  EXPECT_EQ(l.shape(), Shape{7});
  EXPECT_EQ(tensor_bytes(l), (Bytes{0, 1, 2, 9, 3, 3, 8}));
  // A large file whose gzip trailer size guess is exact, and an empty dimension.
  const Bytes big = pattern(300000, 2);
  write_file(dir.file("big.gz"), gzip(idx_file({300, 1000}, big)));
  EXPECT_EQ(tensor_bytes(read_idx(dir.file("big.gz"))), big);
  write_file(dir.file("none"), idx_file({0, 28, 28}, {}));
  EXPECT_EQ(read_idx(dir.file("none")).shape(), (Shape{0, 28, 28}));
}

TEST(Idx, ReadErrorsNameTheFileAndTheProblem) {
  TempDir dir;
  const std::string p = dir.file("bad-idx3-ubyte");
  const std::string pgz = dir.file("bad-idx3-ubyte.gz");
  const Bytes good = idx_file({5, 3, 4}, pattern(60, 3));

  EXPECT_MEL_ERROR(read_idx(dir.file("absent")), "cannot open", "absent",
                   "No such file or directory");
  // Truncated raw file: one data byte short.
  write_file(p, Bytes(good.begin(), good.end() - 1));
  EXPECT_MEL_ERROR(read_idx(p), "bad-idx3-ubyte", "truncated", "dims [5, 3, 4] need 60 data bytes",
                   "has 59", "do not match the file size");
  // Trailing bytes.
  Bytes longer = good;
  longer.push_back(0);
  write_file(p, longer);
  EXPECT_MEL_ERROR(read_idx(p), "bad-idx3-ubyte", "need 60 data bytes but the file has 61",
                   "do not match the file size");
  // Dims whose product overflows.
  write_file(p, idx_file({0xffffffffu, 0xffffffffu, 0xffffffffu}, {1, 2, 3}));
  EXPECT_MEL_ERROR(read_idx(p), "need too many data bytes");
  // Header problems.
  write_file(p, {0, 0});
  EXPECT_MEL_ERROR(read_idx(p), "bad-idx3-ubyte", "truncated IDX file: 2 bytes");
  write_file(p, {0, 0, 8, 3, 0, 0, 0, 5});
  EXPECT_MEL_ERROR(read_idx(p), "too short for the header of 3 dimensions (16 bytes)");
  write_file(p, {0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0});
  EXPECT_MEL_ERROR(read_idx(p), "bad-idx3-ubyte", "wrong magic number 0x12345678", "0x00000803");
  write_file(p, {0, 0, 8, 0});
  EXPECT_MEL_ERROR(read_idx(p), "wrong magic number 0x00000800");
  write_file(p, {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0});
  EXPECT_MEL_ERROR(read_idx(p), "magic number 0x00000D01", "element type 0x0D",
                   "only unsigned bytes");

  // gzip problems: cut short, damaged checksum, not gzip at all, empty.
  const Bytes gz = gzip(idx_file({100, 10}, pattern(1000, 4)));
  write_file(pgz, Bytes(gz.begin(), gz.begin() + static_cast<long>(gz.size() / 2)));
  EXPECT_MEL_ERROR(read_idx(pgz), "bad-idx3-ubyte.gz", "truncated gzip file");
  write_file(pgz, Bytes(gz.begin(), gz.end() - 3));  // only the trailer is cut
  EXPECT_MEL_ERROR(read_idx(pgz), "bad-idx3-ubyte.gz", "truncated gzip file");
  Bytes crc = gz;
  crc[crc.size() - 6] ^= 0x5a;
  write_file(pgz, crc);
  EXPECT_MEL_ERROR(read_idx(pgz), "bad-idx3-ubyte.gz", "corrupted gzip data",
                   "incorrect data check");
  write_file(pgz, good);
  EXPECT_MEL_ERROR(read_idx(pgz), "bad-idx3-ubyte.gz", "corrupted gzip data",
                   "incorrect header check");
  write_file(pgz, {});
  EXPECT_MEL_ERROR(read_idx(pgz), "bad-idx3-ubyte.gz", "empty file");
  // Garbage after a complete member is a corrupted second member.
  Bytes tail = gz;
  tail.insert(tail.end(), {1, 2, 3, 4});
  write_file(pgz, tail);
  EXPECT_MEL_ERROR(read_idx(pgz), "bad-idx3-ubyte.gz", "gzip");
}

// A Fashion-MNIST-like folder: train split gzipped, test split raw.
void write_mnist_dir(const TempDir& dir, int64_t n_train, int64_t n_test) {
  const Bytes train_px = pattern(static_cast<size_t>(n_train) * 6 * 5, 5);
  Bytes train_lbl(static_cast<size_t>(n_train));
  for (int64_t i = 0; i < n_train; ++i) train_lbl[static_cast<size_t>(i)] = (i * 3) % 10;
  write_file(dir.file("train-images-idx3-ubyte.gz"),
             gzip(idx_file({static_cast<uint32_t>(n_train), 6, 5}, train_px)));
  write_file(dir.file("train-labels-idx1-ubyte.gz"),
             gzip(idx_file({static_cast<uint32_t>(n_train)}, train_lbl)));
  const Bytes test_px = pattern(static_cast<size_t>(n_test) * 6 * 5, 6);
  Bytes test_lbl(static_cast<size_t>(n_test), 9);
  write_file(dir.file("t10k-images-idx3-ubyte"),
             idx_file({static_cast<uint32_t>(n_test), 6, 5}, test_px));
  write_file(dir.file("t10k-labels-idx1-ubyte"),
             idx_file({static_cast<uint32_t>(n_test)}, test_lbl));
}

TEST(Idx, LoadsMnistLikeFoldersGzippedOrRaw) {
  TempDir dir;
  write_mnist_dir(dir, 12, 4);
  ImageDataset tr = load_fashion_mnist(dir.str(), Split::train);
  EXPECT_EQ(tr.name, "fashion-mnist");
  EXPECT_EQ(tr.size(), 12);
  EXPECT_EQ(tr.num_classes, 10);
  EXPECT_EQ(tr.num_coarse_classes, 0);
  EXPECT_FALSE(tr.coarse_labels.defined());
  EXPECT_EQ(tr.images.shape(), (Shape{12, 1, 6, 5}));
  EXPECT_TRUE(tr.images.is_contiguous());
  EXPECT_EQ(tensor_bytes(tr.images), pattern(12 * 30, 5));
  EXPECT_EQ(tr.labels.dtype(), DType::i64);
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(tr.labels.at({i}), (i * 3) % 10);

  ImageDataset te = load_mnist(dir.str(), Split::test);
  EXPECT_EQ(te.name, "mnist");
  EXPECT_EQ(te.images.shape(), (Shape{4, 1, 6, 5}));
  EXPECT_EQ(tensor_bytes(te.images), pattern(4 * 30, 6));
  EXPECT_EQ(te.labels.to_vector(), (std::vector<double>(4, 9.0)));

  // The .gz file wins over a raw file of the same name.
  write_file(dir.file("train-labels-idx1-ubyte"), idx_file({12}, Bytes(12, 0)));
  EXPECT_EQ(load_mnist_like(dir.str(), Split::train, "mnist").labels.at({1}), 3.0);

  // load_dataset dispatches by name.
  EXPECT_EQ(load_dataset("fashion-mnist", dir.str(), Split::test).size(), 4);
  EXPECT_EQ(load_dataset("mnist", dir.str(), Split::train).name, "mnist");
}

TEST(Idx, LoaderErrorsNameTheFileAndTheProblem) {
  TempDir dir;
  const std::string missing = dir.file("nowhere");
  EXPECT_MEL_ERROR(load_fashion_mnist(missing, Split::train), "Fashion-MNIST folder",
                   missing.c_str(), "does not exist", "dataset-fashion-mnist",
                   "/usr/share/datasets/fashion-mnist", "--data");
  EXPECT_MEL_ERROR(load_mnist(missing, Split::train), "MNIST folder", "does not exist", "--data");
  write_file(dir.file("plain"), {1});
  EXPECT_MEL_ERROR(load_mnist(dir.file("plain"), Split::test), "is not a directory");

  write_mnist_dir(dir, 6, 3);
  fs::remove(dir.file("train-labels-idx1-ubyte.gz"));
  EXPECT_MEL_ERROR(load_fashion_mnist(dir.str(), Split::train), "Fashion-MNIST: missing file",
                   "train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte'");

  // Image and label counts differ.
  write_file(dir.file("train-labels-idx1-ubyte.gz"), gzip(idx_file({5}, Bytes(5, 1))));
  EXPECT_MEL_ERROR(load_fashion_mnist(dir.str(), Split::train), "image/label count mismatch",
                   "train-images-idx3-ubyte.gz' has 6 images",
                   "train-labels-idx1-ubyte.gz' has 5 labels");
  // A label of 10.
  write_file(dir.file("train-labels-idx1-ubyte.gz"), gzip(idx_file({6}, {0, 1, 10, 3, 4, 5})));
  EXPECT_MEL_ERROR(load_fashion_mnist(dir.str(), Split::train), "train-labels-idx1-ubyte.gz",
                   "label 10 of sample 2 is out of range (expected 0..9)");
  // Labels and images swapped.
  write_file(dir.file("t10k-images-idx3-ubyte"), idx_file({3}, {1, 2, 3}));
  EXPECT_MEL_ERROR(load_mnist(dir.str(), Split::test), "t10k-images-idx3-ubyte",
                   "expected an IDX image file (magic 0x00000803");
  write_file(dir.file("t10k-images-idx3-ubyte"), idx_file({3, 2, 2}, Bytes(12, 1)));
  write_file(dir.file("t10k-labels-idx1-ubyte"), idx_file({3, 1}, {1, 2, 3}));
  EXPECT_MEL_ERROR(load_mnist(dir.str(), Split::test), "t10k-labels-idx1-ubyte",
                   "expected an IDX label file (magic 0x00000801");
  // A truncated gzip file inside the folder.
  const Bytes gz = gzip(idx_file({6, 6, 5}, pattern(180, 1)));
  write_file(dir.file("train-images-idx3-ubyte.gz"), Bytes(gz.begin(), gz.begin() + 20));
  EXPECT_MEL_ERROR(load_fashion_mnist(dir.str(), Split::train), "train-images-idx3-ubyte.gz",
                   "truncated gzip file");

  EXPECT_MEL_ERROR(load_dataset("imagenet", dir.str(), Split::train), "unknown dataset 'imagenet'",
                   "fashion-mnist, mnist, cifar10, cifar100 or spoken-words");
  EXPECT_MEL_ERROR(load_dataset("cifar10", "", Split::train), "dataset 'cifar10'",
                   "no default location", "--data");
  EXPECT_MEL_ERROR(load_dataset("mnist", "", Split::train), "--data");
}

TEST(Idx, RealFashionMnistWhenInstalled) {
  if (!fs::is_directory(kFashionMnistDefaultDir)) {
    GTEST_SKIP() << kFashionMnistDefaultDir << " is absent (Debian package dataset-fashion-mnist)";
  }
  for (Split split : {Split::train, Split::test}) {
    ImageDataset ds = load_dataset("fashion-mnist", "", split);
    const int64_t n = split == Split::train ? 60000 : 10000;
    EXPECT_EQ(ds.name, "fashion-mnist");
    ASSERT_EQ(ds.size(), n);
    EXPECT_EQ(ds.images.shape(), (Shape{n, 1, 28, 28}));
    // Fashion-MNIST is balanced: n / 10 samples per class.
    std::vector<int64_t> count(10, 0);
    const int64_t* y = ds.labels.data<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_GE(y[i], 0);
      ASSERT_LT(y[i], 10);
      ++count[static_cast<size_t>(y[i])];
    }
    EXPECT_EQ(count, std::vector<int64_t>(10, n / 10));
    if (split == Split::train) {
      // The training-set statistics everyone quotes: mean 0.2860, std 0.3530.
      auto [mean, stdev] = channel_stats(ds.images);
      EXPECT_NEAR(mean[0], 0.2860, 5e-4);
      EXPECT_NEAR(stdev[0], 0.3530, 5e-4);
    }
  }
}

}  // namespace
}  // namespace mel::data
