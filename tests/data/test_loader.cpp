#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>

#include "data/loader.h"
#include "data/transforms.h"
#include "data_testing.h"
#include "gradcheck.h"

namespace mel::data {
namespace {

using namespace mel::data::testing;

std::vector<int64_t> labels_of(const Batch& b) {
  const int64_t* p = b.y.data<int64_t>();
  return std::vector<int64_t>(p, p + b.y.numel());
}

std::vector<Batch> epoch_batches(DataLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].index, b[k].index);
    EXPECT_TRUE(same_bytes(a[k].x, b[k].x)) << "batch " << k;
    EXPECT_TRUE(same_bytes(a[k].y, b[k].y)) << "batch " << k;
  }
}

TEST(DataLoader, BatchesCoverThePermutationOncePerEpoch) {
  const ImageDataset ds = index_dataset(103, 1, 4, 5);
  for (bool prefetch : {true, false}) {
    LoaderOptions o;
    o.batch_size = 10;
    o.seed = 7;
    o.prefetch = prefetch;
    DataLoader loader(ds, o);
    EXPECT_EQ(loader.num_batches(), 11);
    EXPECT_EQ(loader.num_samples(), 103);
    for (int64_t epoch : {0, 1}) {
      std::vector<Batch> batches = epoch_batches(loader, epoch);
      ASSERT_EQ(batches.size(), 11u);
      std::vector<int64_t> seen;
      for (size_t k = 0; k < batches.size(); ++k) {
        EXPECT_EQ(batches[k].index, static_cast<int64_t>(k));
        const int64_t b = k + 1 < batches.size() ? 10 : 3;
        EXPECT_EQ(batches[k].x.shape(), (Shape{b, 1, 4, 5}));
        EXPECT_EQ(batches[k].x.dtype(), DType::f32);
        EXPECT_EQ(batches[k].y.dtype(), DType::i64);
        EXPECT_FALSE(batches[k].y_coarse.defined());
        for (int64_t v : labels_of(batches[k])) seen.push_back(v);
      }
      EXPECT_EQ(seen, loader.epoch_order(epoch));
      std::vector<int64_t> sorted = seen;
      std::sort(sorted.begin(), sorted.end());
      std::vector<int64_t> all(103);
      std::iota(all.begin(), all.end(), 0);
      EXPECT_EQ(sorted, all);
      EXPECT_NE(seen, all) << "shuffle left the order unchanged";
      // Each image is the one its label names.
      for (const Batch& b : batches) {
        for (int64_t i = 0; i < b.y.numel(); ++i) {
          const int64_t idx = b.y.data<int64_t>()[i];
          EXPECT_FLOAT_EQ(b.x.at({i, 0, 1, 2}), ((idx * 13 + 7 * 7) % 256) / 255.0f);
        }
      }
    }
    // The epoch is over until the next start_epoch.
    Batch b;
    EXPECT_FALSE(loader.next(b));
  }
}

TEST(DataLoader, WithoutShuffleTheOrderIsTheDatasetOrder) {
  const ImageDataset ds = index_dataset(9, 1, 2, 2);
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  DataLoader loader(ds, o);
  std::vector<int64_t> seen;
  for (const Batch& b : epoch_batches(loader, 3)) {
    for (int64_t v : labels_of(b)) seen.push_back(v);
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(DataLoader, DropLastAndLimit) {
  const ImageDataset ds = index_dataset(103, 1, 2, 3);
  LoaderOptions o;
  o.batch_size = 10;
  o.drop_last = true;
  DataLoader dl(ds, o);
  EXPECT_EQ(dl.num_batches(), 10);
  std::set<int64_t> seen;
  for (const Batch& b : epoch_batches(dl, 0)) {
    EXPECT_EQ(b.y.numel(), 10);
    for (int64_t v : labels_of(b)) seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 100u);

  o.drop_last = false;
  o.limit = 25;
  DataLoader lim(ds, o);
  EXPECT_EQ(lim.num_samples(), 25);
  EXPECT_EQ(lim.num_batches(), 3);
  seen.clear();
  for (const Batch& b : epoch_batches(lim, 0)) {
    for (int64_t v : labels_of(b)) seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 25u);
  EXPECT_EQ(*seen.rbegin(), 24);

  o.limit = 1000;  // more than the dataset: all of it
  EXPECT_EQ(DataLoader(ds, o).num_samples(), 103);

  // Fewer samples than one batch with drop_last: an empty epoch.
  o.limit = 5;
  o.drop_last = true;
  DataLoader none(ds, o);
  EXPECT_EQ(none.num_batches(), 0);
  EXPECT_TRUE(epoch_batches(none, 0).empty());
}

TEST(DataLoader, DeterministicFromSeedAndEpoch) {
  const ImageDataset ds = index_dataset(50, 3, 6, 6);
  LoaderOptions o;
  o.batch_size = 8;
  o.seed = 11;
  o.crop_padding = 2;
  o.hflip = true;
  o.mean = {0.4f, 0.5f, 0.6f};
  o.std = {0.2f, 0.25f, 0.3f};
  DataLoader a(ds, o), b(ds, o);
  const auto a1 = epoch_batches(a, 1);
  expect_same_batches(a1, epoch_batches(b, 1));
  // Epochs visited in another order give the same batches.
  const auto a0 = epoch_batches(a, 0);
  expect_same_batches(epoch_batches(a, 1), a1);
  expect_same_batches(epoch_batches(b, 0), a0);
  // Different epochs and different seeds differ.
  EXPECT_NE(a.epoch_order(0), a.epoch_order(1));
  EXPECT_FALSE(same_bytes(a0[0].x, a1[0].x));
  LoaderOptions o2 = o;
  o2.seed = 12;
  DataLoader c(ds, o2);
  EXPECT_NE(c.epoch_order(1), a.epoch_order(1));
  // Restarting an epoch half-way through starts it over.
  a.start_epoch(1);
  Batch first;
  ASSERT_TRUE(a.next(first));
  ASSERT_TRUE(a.next(first));
  expect_same_batches(epoch_batches(a, 1), a1);
}

TEST(DataLoader, PrefetchOnAndOffGiveIdenticalBatches) {
  const ImageDataset ds = index_dataset(77, 3, 8, 8, /*coarse=*/true);
  LoaderOptions o;
  o.batch_size = 16;
  o.seed = 5;
  o.crop_padding = 3;
  o.hflip = true;
  o.mean = {0.5f};
  o.std = {0.25f};
  LoaderOptions off = o;
  off.prefetch = false;
  DataLoader on_loader(ds, o), off_loader(ds, off);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto x = epoch_batches(on_loader, epoch);
    const auto y = epoch_batches(off_loader, epoch);
    expect_same_batches(x, y);
    for (size_t k = 0; k < x.size(); ++k) EXPECT_TRUE(same_bytes(x[k].y_coarse, y[k].y_coarse));
  }
  // Slow consumers too: the worker waits for the request, it does not run ahead.
  on_loader.start_epoch(0);
  std::vector<Batch> slow;
  Batch b;
  while (on_loader.next(b)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    slow.push_back(b);
  }
  expect_same_batches(slow, epoch_batches(off_loader, 0));
}

TEST(DataLoader, HeldBatchesAreNotOverwritten) {
  const ImageDataset ds = index_dataset(40, 1, 3, 3);
  LoaderOptions o;
  o.batch_size = 4;
  DataLoader loader(ds, o);
  const auto batches = epoch_batches(loader, 0);
  for (const Batch& b : batches) {
    for (int64_t i = 0; i < b.y.numel(); ++i) {
      const int64_t idx = b.y.data<int64_t>()[i];
      EXPECT_FLOAT_EQ(b.x.at({i, 0, 0, 0}), ((idx * 13) % 256) / 255.0f);
    }
  }
}

TEST(DataLoader, NormalisationValues) {
  const ImageDataset ds = index_dataset(6, 3, 5, 4);
  LoaderOptions o;
  o.batch_size = 6;
  o.shuffle = false;
  o.mean = {0.1f, 0.2f, 0.3f};
  o.std = {0.5f, 1.0f, 2.0f};
  DataLoader loader(ds, o);
  const auto batches = epoch_batches(loader, 0);
  ASSERT_EQ(batches.size(), 1u);
  const Tensor& x = batches[0].x;
  for (int64_t i = 0; i < 6; ++i) {
    for (int64_t c = 0; c < 3; ++c) {
      for (int64_t y = 0; y < 5; ++y) {
        for (int64_t w = 0; w < 4; ++w) {
          const double v = ds.images.at({i, c, y, w});
          const double want = (v / 255.0 - o.mean[c]) / o.std[c];
          ASSERT_NEAR(x.at({i, c, y, w}), want, 1e-6);
        }
      }
    }
  }
  // The same values from normalize_images, bit for bit.
  EXPECT_TRUE(same_bytes(normalize_images(ds.images, o.mean, o.std), x));
  // No mean/std: plain scaling to [0, 1]; one value applies to every channel.
  Tensor plain = normalize_images(ds.images, {}, {});
  EXPECT_FLOAT_EQ(plain.at({2, 1, 3, 3}), ds.images.at({2, 1, 3, 3}) / 255.0f);
  Tensor one = normalize_images(ds.images, {0.5f}, {0.5f});
  EXPECT_NEAR(one.at({1, 2, 0, 1}), (ds.images.at({1, 2, 0, 1}) / 255.0 - 0.5) / 0.5, 1e-6);
  Normalizer n(1, {}, {});
  EXPECT_EQ(n.table(0)[0], 0.0f);
  EXPECT_EQ(n.table(0)[255], 1.0f);
  // channel_stats of a constant image and of a two-valued one.
  Tensor img = full({2, 2, 1, 2}, 51.0, DType::u8);
  img.set({0, 1, 0, 0}, 0.0);
  img.set({1, 1, 0, 1}, 0.0);
  img.set({0, 1, 0, 1}, 255.0);
  img.set({1, 1, 0, 0}, 255.0);
  auto [mean, stdev] = channel_stats(img);
  EXPECT_NEAR(mean[0], 0.2, 1e-6);
  EXPECT_NEAR(stdev[0], 0.0, 1e-6);
  EXPECT_NEAR(mean[1], 0.5, 1e-6);
  EXPECT_NEAR(stdev[1], 0.5, 1e-6);
}

// A 1x3x4 image with pixels 1..12, row by row.
std::vector<uint8_t> small_image() {
  std::vector<uint8_t> v(12);
  std::iota(v.begin(), v.end(), uint8_t{1});
  return v;
}

std::vector<float> run_transform(int64_t pad, Augment a) {
  const auto img = small_image();
  std::vector<float> out(12, -1.0f);
  Normalizer n(1, {}, {});
  transform_image(img.data(), out.data(), 1, 3, 4, n, pad, a);
  for (float& v : out) v = std::round(v * 255.0f);  // back to byte values
  return out;
}

TEST(Transforms, CropAndFlipOfAKnownImage) {
  using V = std::vector<float>;
  // Centre crop of the padded image is the image.
  EXPECT_EQ(run_transform(1, {1, 1, false}), (V{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  // Offset (0, 0): the image moves down and right by one, zeros come in.
  EXPECT_EQ(run_transform(1, {0, 0, false}), (V{0, 0, 0, 0, 0, 1, 2, 3, 0, 5, 6, 7}));
  // Offset (2, 2): up and left.
  EXPECT_EQ(run_transform(1, {2, 2, false}), (V{6, 7, 8, 0, 10, 11, 12, 0, 0, 0, 0, 0}));
  // Offset (dy 1, dx 0) then a flip: mirrored rows of the right-shifted image.
  EXPECT_EQ(run_transform(1, {1, 0, true}), (V{3, 2, 1, 0, 7, 6, 5, 0, 11, 10, 9, 0}));
  // Flip alone.
  EXPECT_EQ(run_transform(0, {0, 0, true}), (V{4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9}));
  // Padding wider than the image: crops that miss the image entirely are all zeros.
  EXPECT_EQ(run_transform(5, {0, 0, false}), V(12, 0.0f));
  EXPECT_EQ(run_transform(5, {10, 10, true}), V(12, 0.0f));
  EXPECT_EQ(run_transform(5, {5, 9, false}), (V{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(run_transform(5, {5, 7, false}), (V{3, 4, 0, 0, 7, 8, 0, 0, 11, 12, 0, 0}));
  // Zero padding is byte 0 normalised, not 0.0f.
  const auto img = small_image();
  std::vector<float> out(12);
  Normalizer n(1, {0.5f}, {0.5f});
  transform_image(img.data(), out.data(), 1, 3, 4, n, 1, {0, 0, false});
  EXPECT_FLOAT_EQ(out[0], -1.0f);
}

TEST(DataLoader, AppliesEachSamplesCropAndFlip) {
  const ImageDataset ds = index_dataset(64, 2, 5, 7);
  LoaderOptions o;
  o.batch_size = 13;
  o.seed = 3;
  o.crop_padding = 2;
  o.hflip = true;
  DataLoader loader(ds, o);
  const int64_t per = 2 * 5 * 7;
  Normalizer norm(2, {}, {});
  int flips = 0;
  std::set<std::pair<int64_t, int64_t>> offsets;
  for (const Batch& b : epoch_batches(loader, 4)) {
    for (int64_t i = 0; i < b.y.numel(); ++i) {
      const int64_t idx = b.y.data<int64_t>()[i];
      const Augment a = loader.augment_for(4, idx);
      ASSERT_GE(a.dx, 0);
      ASSERT_LE(a.dx, 4);
      ASSERT_GE(a.dy, 0);
      ASSERT_LE(a.dy, 4);
      flips += a.flip;
      offsets.insert({a.dy, a.dx});
      std::vector<float> want(per);
      transform_image(ds.images.data<uint8_t>() + idx * per, want.data(), 2, 5, 7, norm, 2, a);
      EXPECT_EQ(std::memcmp(want.data(), b.x.data<float>() + i * per, per * sizeof(float)), 0)
          << "sample " << idx;
    }
  }
  // 64 fair coin flips and 25 possible offsets: loose bounds that still catch a stuck generator.
  EXPECT_GT(flips, 16);
  EXPECT_LT(flips, 48);
  EXPECT_GT(offsets.size(), 12u);
  // Another epoch draws other augmentations.
  int same = 0;
  for (int64_t idx = 0; idx < 64; ++idx) {
    const Augment a = loader.augment_for(4, idx), b = loader.augment_for(5, idx);
    same += a.dx == b.dx && a.dy == b.dy && a.flip == b.flip;
  }
  EXPECT_LT(same, 16);
  // Without augmentation options nothing moves.
  LoaderOptions plain;
  DataLoader p(ds, plain);
  const Augment none = p.augment_for(0, 5);
  EXPECT_EQ(none.dx + none.dy, 0);
  EXPECT_FALSE(none.flip);
}

TEST(DataLoader, CoarseLabelsAreCarried) {
  const ImageDataset ds = index_dataset(30, 1, 2, 2, /*coarse=*/true);
  LoaderOptions o;
  o.batch_size = 7;
  DataLoader loader(ds, o);
  for (const Batch& b : epoch_batches(loader, 0)) {
    ASSERT_TRUE(b.y_coarse.defined());
    ASSERT_EQ(b.y_coarse.shape(), b.y.shape());
    for (int64_t i = 0; i < b.y.numel(); ++i) {
      EXPECT_EQ(b.y_coarse.data<int64_t>()[i], b.y.data<int64_t>()[i] % 4);
    }
  }
}

TEST(DataLoader, NextWithoutStartEpochRunsEpochZero) {
  const ImageDataset ds = index_dataset(10, 1, 2, 2);
  LoaderOptions o;
  o.batch_size = 3;
  o.seed = 9;
  DataLoader a(ds, o), b(ds, o);
  Batch x;
  ASSERT_TRUE(a.next(x));
  EXPECT_EQ(labels_of(x), labels_of(epoch_batches(b, 0)[0]));
}

TEST(DataLoader, WorkerErrorsAreRethrownByNext) {
  ImageDataset ds = index_dataset(20, 1, 2, 2);
  ds.num_classes = 10;  // labels are 0..19, so the first batch holding 10..19 fails
  for (bool prefetch : {true, false}) {
    LoaderOptions o;
    o.batch_size = 5;
    o.shuffle = false;
    o.prefetch = prefetch;
    DataLoader loader(ds, o);
    loader.start_epoch(0);
    Batch b;
    ASSERT_TRUE(loader.next(b));
    ASSERT_TRUE(loader.next(b));
    EXPECT_MEL_ERROR(loader.next(b), "DataLoader", "synthetic", "sample 10 has label 10",
                     "outside 0..9");
    // The loader is still usable: a new epoch starts over.
    loader.start_epoch(1);
    ASSERT_TRUE(loader.next(b));
    EXPECT_EQ(labels_of(b), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  }
}

TEST(DataLoader, DestroyingWhileABatchIsPreparedDoesNotHang) {
  const ImageDataset ds = index_dataset(512, 3, 32, 32);
  for (int i = 0; i < 20; ++i) {
    LoaderOptions o;
    o.batch_size = 256;
    DataLoader loader(ds, o);
    loader.start_epoch(i);
    if (i % 2) {
      Batch b;
      ASSERT_TRUE(loader.next(b));
    }
  }
}

TEST(DataLoader, RejectsBadOptionsAndDatasets) {
  const ImageDataset ds = index_dataset(10, 3, 2, 2);
  LoaderOptions o;
  o.batch_size = 0;
  EXPECT_MEL_ERROR(DataLoader(ds, o), "batch_size must be >= 1, got 0");
  o = LoaderOptions();
  o.mean = {0.5f, 0.5f};
  EXPECT_MEL_ERROR(DataLoader(ds, o), "mean has 2", "3 channel(s)");
  o = LoaderOptions();
  o.std = {1.0f, 0.0f, 1.0f};
  EXPECT_MEL_ERROR(DataLoader(ds, o), "channel 1", "std must be positive");
  o = LoaderOptions();
  o.limit = -1;
  EXPECT_MEL_ERROR(DataLoader(ds, o), "limit must be >= 0");
  o = LoaderOptions();
  o.crop_padding = -2;
  EXPECT_MEL_ERROR(DataLoader(ds, o), "crop_padding must be >= 0");

  ImageDataset bad = ds;
  bad.images = ds.images.to(DType::f64);
  EXPECT_MEL_ERROR(DataLoader(bad, LoaderOptions()),
                   "images must be contiguous u8 (or f32 features) [N, C, H, W]", "f64");
  bad = ds;
  bad.images = ds.images.permute({0, 2, 3, 1});
  EXPECT_MEL_ERROR(DataLoader(bad, LoaderOptions()), "images must be contiguous");
  bad = ds;
  bad.labels = ds.labels.narrow(0, 0, 9);
  EXPECT_MEL_ERROR(DataLoader(bad, LoaderOptions()), "labels must be contiguous i64 [10]", "[9]");
  bad = ds;
  bad.coarse_labels = ds.labels.to(DType::i32);
  EXPECT_MEL_ERROR(DataLoader(bad, LoaderOptions()), "coarse labels", "i32");
  bad = ImageDataset();
  EXPECT_MEL_ERROR(DataLoader(bad, LoaderOptions()), "has no images or labels");
}

}  // namespace
}  // namespace mel::data
