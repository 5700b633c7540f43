#include "data/cifar.h"
#include "data_testing.h"
#include "gradcheck.h"

namespace mel::data {
namespace {

using namespace mel::data::testing;

constexpr int64_t kPx = 3072;

// Records whose pixel k of record r (global index g) is (g * 5 + k) % 256.
Bytes cifar_records(const std::vector<std::vector<uint8_t>>& labels, int64_t first_index) {
  Bytes out;
  for (size_t r = 0; r < labels.size(); ++r) {
    out.insert(out.end(), labels[r].begin(), labels[r].end());
    const int64_t g = first_index + static_cast<int64_t>(r);
    for (int64_t k = 0; k < kPx; ++k) out.push_back(static_cast<uint8_t>((g * 5 + k) % 256));
  }
  return out;
}

void expect_pixels(const ImageDataset& ds) {
  const uint8_t* p = ds.images.data<uint8_t>();
  for (int64_t g = 0; g < ds.size(); ++g) {
    for (int64_t k = 0; k < kPx; ++k) {
      ASSERT_EQ(p[g * kPx + k], (g * 5 + k) % 256) << "sample " << g << " pixel " << k;
    }
  }
}

// CIFAR-10 batches of 2, 3, 1, 2 and 2 records (labels g % 10) and a test batch of 3.
void write_cifar10(const std::string& dir) {
  const int sizes[5] = {2, 3, 1, 2, 2};
  int64_t g = 0;
  for (int b = 0; b < 5; ++b) {
    std::vector<std::vector<uint8_t>> labels;
    for (int r = 0; r < sizes[b]; ++r) labels.push_back({static_cast<uint8_t>((g + r) % 10)});
    write_file(dir + fmt::format("/data_batch_{}.bin", b + 1), cifar_records(labels, g));
    g += sizes[b];
  }
  write_file(dir + "/test_batch.bin", cifar_records({{9}, {0}, {5}}, 0));
}

TEST(Cifar, Cifar10RecordsAreReadExactly) {
  TempDir dir;
  write_cifar10(dir.str());
  ImageDataset tr = load_cifar10(dir.str(), Split::train);
  EXPECT_EQ(tr.name, "cifar10");
  EXPECT_EQ(tr.num_classes, 10);
  EXPECT_FALSE(tr.coarse_labels.defined());
  ASSERT_EQ(tr.images.shape(), (Shape{10, 3, 32, 32}));
  expect_pixels(tr);
  // Channel planes: [g, c, y, x] is byte c * 1024 + y * 32 + x of the record.
  EXPECT_EQ(tr.images.at({4, 2, 3, 7}), (4 * 5 + 2 * 1024 + 3 * 32 + 7) % 256);
  for (int64_t g = 0; g < 10; ++g) EXPECT_EQ(tr.labels.at({g}), g % 10);
  ImageDataset te = load_dataset("cifar10", dir.str(), Split::test);
  EXPECT_EQ(te.size(), 3);
  EXPECT_EQ(te.labels.to_vector(), (std::vector<double>{9, 0, 5}));
  expect_pixels(te);
}

TEST(Cifar, ArchiveFolderInsideTheGivenDirectoryIsFound) {
  TempDir dir;
  fs::create_directories(dir.file("cifar-10-batches-bin"));
  write_cifar10(dir.file("cifar-10-batches-bin"));
  EXPECT_EQ(load_cifar10(dir.str(), Split::train).size(), 10);
  fs::create_directories(dir.file("cifar-100-binary"));
  write_file(dir.file("cifar-100-binary/test.bin"), cifar_records({{3, 42}}, 0));
  EXPECT_EQ(load_cifar100(dir.str(), Split::test).labels.at({0}), 42.0);
}

TEST(Cifar, Cifar100CarriesCoarseAndFineLabels) {
  TempDir dir;
  write_file(dir.file("train.bin"), cifar_records({{0, 0}, {19, 99}, {7, 55}, {4, 1}}, 0));
  write_file(dir.file("test.bin"), cifar_records({{2, 3}}, 0));
  ImageDataset tr = load_dataset("cifar100", dir.str(), Split::train);
  EXPECT_EQ(tr.name, "cifar100");
  EXPECT_EQ(tr.num_classes, 100);
  EXPECT_EQ(tr.num_coarse_classes, 20);
  ASSERT_EQ(tr.images.shape(), (Shape{4, 3, 32, 32}));
  EXPECT_EQ(tr.labels.to_vector(), (std::vector<double>{0, 99, 55, 1}));
  ASSERT_TRUE(tr.coarse_labels.defined());
  EXPECT_EQ(tr.coarse_labels.dtype(), DType::i64);
  EXPECT_EQ(tr.coarse_labels.to_vector(), (std::vector<double>{0, 19, 7, 4}));
  expect_pixels(tr);
  EXPECT_EQ(load_cifar100(dir.str(), Split::test).coarse_labels.to_vector(),
            (std::vector<double>{2}));
}

TEST(Cifar, ErrorsNameTheFileAndTheProblem) {
  TempDir dir;
  EXPECT_MEL_ERROR(load_cifar10(dir.file("none"), Split::train), "CIFAR-10 folder", "none",
                   "does not exist", "--data");
  EXPECT_MEL_ERROR(load_cifar100(dir.file("none"), Split::test), "CIFAR-100 folder",
                   "does not exist");
  write_cifar10(dir.str());
  fs::remove(dir.file("data_batch_3.bin"));
  EXPECT_MEL_ERROR(load_cifar10(dir.str(), Split::train), "CIFAR-10: missing file",
                   "data_batch_3.bin");
  write_cifar10(dir.str());

  // A record cut short.
  Bytes b = cifar_records({{1}, {2}}, 0);
  b.pop_back();
  write_file(dir.file("data_batch_2.bin"), b);
  EXPECT_MEL_ERROR(load_cifar10(dir.str(), Split::train), "data_batch_2.bin", "size 6145 bytes",
                   "not a multiple of the 3073-byte CIFAR-10 record size", "1 whole records");
  write_file(dir.file("data_batch_2.bin"), {});
  EXPECT_MEL_ERROR(load_cifar10(dir.str(), Split::train), "data_batch_2.bin", "empty file");
  // Label 10 in the second record of the test batch.
  write_file(dir.file("test_batch.bin"), cifar_records({{1}, {10}}, 0));
  EXPECT_MEL_ERROR(load_cifar10(dir.str(), Split::test), "test_batch.bin",
                   "record 1 has label 10, out of range (expected 0..9)");

  // CIFAR-100: wrong record size (a CIFAR-10 file), fine > 99, coarse > 19.
  write_file(dir.file("train.bin"), cifar_records({{1}, {2}, {3}}, 0));
  EXPECT_MEL_ERROR(load_cifar100(dir.str(), Split::train), "train.bin",
                   "not a multiple of the 3074-byte CIFAR-100 record size");
  write_file(dir.file("train.bin"), cifar_records({{1, 2}, {3, 100}}, 0));
  EXPECT_MEL_ERROR(load_cifar100(dir.str(), Split::train), "train.bin",
                   "record 1 has fine label 100, out of range (expected 0..99)");
  write_file(dir.file("train.bin"), cifar_records({{20, 2}}, 0));
  EXPECT_MEL_ERROR(load_cifar100(dir.str(), Split::train), "train.bin",
                   "record 0 has coarse label 20, out of range (expected 0..19)");
  EXPECT_MEL_ERROR(load_cifar100(dir.str(), Split::test), "CIFAR-100: missing file", "test.bin");
}

}  // namespace
}  // namespace mel::data
