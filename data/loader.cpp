#include "data/loader.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/random.h"

namespace mel::data {

namespace {

// Distinct streams for the permutation and for augmentation of the same (seed, epoch).
constexpr uint64_t kShuffleStream = 0x53485546464c45ull;  // "SHUFFLE"
constexpr uint64_t kAugmentStream = 0x4155474d454e54ull;  // "AUGMENT"
constexpr uint64_t kMaskStream = 0x4d41534b53ull;         // "MASKS"

uint64_t key(uint64_t seed, int64_t epoch, uint64_t stream) {
  return splitmix64(splitmix64(splitmix64(seed) ^ stream) + static_cast<uint64_t>(epoch));
}

int64_t channels_of(const ImageDataset& ds) {
  return ds.images.defined() && ds.images.dim() == 4 ? ds.images.size(1) : 1;
}

void check_labels(const ImageDataset& ds, const Tensor& t, const char* what, int64_t n) {
  MEL_CHECK(t.dtype() == DType::i64 && t.dim() == 1 && t.size(0) == n && t.is_contiguous() &&
                t.device().is_cpu(),
            "DataLoader: dataset '{}' {} must be contiguous i64 [{}] on the CPU, got {} {}",
            ds.name, what, n, dtype_name(t.dtype()), shape_str(t.shape()));
}

}  // namespace

DataLoader::DataLoader(const ImageDataset& ds, LoaderOptions opts)
    : ds_(ds), opts_(std::move(opts)), norm_(channels_of(ds), opts_.mean, opts_.std) {
  MEL_CHECK(ds.images.defined() && ds.labels.defined(),
            "DataLoader: dataset '{}' has no images or labels", ds.name);
  const Tensor& im = ds.images;
  MEL_CHECK((im.dtype() == DType::u8 || im.dtype() == DType::f32) && im.dim() == 4 &&
                im.is_contiguous() && im.device().is_cpu(),
            "DataLoader: dataset '{}' images must be contiguous u8 (or f32 features) [N, C, H, W] "
            "on the CPU, got {} {}",
            ds.name, dtype_name(im.dtype()), shape_str(im.shape()));
  MEL_CHECK(im.dtype() == DType::u8 || (opts_.crop_padding == 0 && !opts_.hflip),
            "DataLoader: dataset '{}' holds f32 features, which take no crop or flip "
            "(crop_padding {}, hflip {}); use SpecAugment masking",
            ds.name, opts_.crop_padding, opts_.hflip);
  const SpecAugment& sa = opts_.spec_augment;
  MEL_CHECK(sa.freq_masks >= 0 && sa.freq_width >= 0 && sa.time_masks >= 0 && sa.time_width >= 0,
            "DataLoader: SpecAugment counts and widths must be >= 0, got freq {} x {}, time {} x "
            "{}",
            sa.freq_masks, sa.freq_width, sa.time_masks, sa.time_width);
  const int64_t total = im.size(0);
  check_labels(ds, ds.labels, "labels", total);
  if (ds.coarse_labels.defined()) check_labels(ds, ds.coarse_labels, "coarse labels", total);
  MEL_CHECK(opts_.batch_size >= 1, "DataLoader: batch_size must be >= 1, got {}", opts_.batch_size);
  MEL_CHECK(opts_.limit >= 0, "DataLoader: limit must be >= 0, got {}", opts_.limit);
  MEL_CHECK(opts_.crop_padding >= 0, "DataLoader: crop_padding must be >= 0, got {}",
            opts_.crop_padding);
  C_ = im.size(1);
  H_ = im.size(2);
  W_ = im.size(3);
  n_ = opts_.limit > 0 ? std::min(opts_.limit, total) : total;
  num_batches_ =
      opts_.drop_last ? n_ / opts_.batch_size : (n_ + opts_.batch_size - 1) / opts_.batch_size;
  if (opts_.prefetch) worker_ = std::thread([this] { worker_loop(); });
}

DataLoader::~DataLoader() {
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (shuffle) {
    SplitMix64 rng(key(seed, epoch, kShuffleStream));
    for (int64_t i = n - 1; i > 0; --i) {
      const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
  }
  return order;
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  return data::epoch_order(n_, opts_.seed, epoch, opts_.shuffle);
}

Augment DataLoader::augment_for(int64_t epoch, int64_t index) const {
  Augment a;
  if (opts_.crop_padding == 0 && !opts_.hflip) return a;
  const uint64_t h =
      splitmix64(key(opts_.seed, epoch, kAugmentStream) ^ splitmix64(static_cast<uint64_t>(index)));
  if (opts_.crop_padding > 0) {
    const uint64_t span = 2 * static_cast<uint64_t>(opts_.crop_padding) + 1;
    a.dy = static_cast<int64_t>((h & 0xffffffu) % span);
    a.dx = static_cast<int64_t>(((h >> 24) & 0xffffffu) % span);
  }
  a.flip = opts_.hflip && ((h >> 63) & 1u);
  return a;
}

std::vector<Mask> DataLoader::masks_for(int64_t epoch, int64_t index) const {
  if (!opts_.spec_augment.enabled()) return {};
  return draw_masks(
      opts_.spec_augment, H_, W_,
      splitmix64(key(opts_.seed, epoch, kMaskStream) ^ splitmix64(static_cast<uint64_t>(index))));
}

Batch DataLoader::make_batch(int64_t k) const {
  const int64_t begin = k * opts_.batch_size;
  const int64_t b = std::min(opts_.batch_size, n_ - begin);
  const int64_t per = C_ * H_ * W_;
  Batch out;
  out.index = k;
  out.x = empty({b, C_, H_, W_}, DType::f32);
  out.y = empty({b}, DType::i64);
  if (ds_.coarse_labels.defined()) out.y_coarse = empty({b}, DType::i64);
  const bool features = ds_.images.dtype() == DType::f32;
  const uint8_t* images = features ? nullptr : ds_.images.data<uint8_t>();
  const float* feats = features ? ds_.images.data<float>() : nullptr;
  const int64_t* labels = ds_.labels.data<int64_t>();
  const int64_t* coarse = ds_.coarse_labels.defined() ? ds_.coarse_labels.data<int64_t>() : nullptr;
  float* x = out.x.data<float>();
  int64_t* y = out.y.data<int64_t>();
  int64_t* yc = coarse ? out.y_coarse.data<int64_t>() : nullptr;
  for (int64_t i = 0; i < b; ++i) {
    const int64_t idx = order_[static_cast<size_t>(begin + i)];
    const int64_t label = labels[idx];
    MEL_CHECK(ds_.num_classes <= 0 || (label >= 0 && label < ds_.num_classes),
              "DataLoader: dataset '{}' sample {} has label {}, outside 0..{}", ds_.name, idx,
              label, ds_.num_classes - 1);
    y[i] = label;
    if (yc) {
      MEL_CHECK(
          ds_.num_coarse_classes <= 0 || (coarse[idx] >= 0 && coarse[idx] < ds_.num_coarse_classes),
          "DataLoader: dataset '{}' sample {} has coarse label {}, outside 0..{}", ds_.name, idx,
          coarse[idx], ds_.num_coarse_classes - 1);
      yc[i] = coarse[idx];
    }
    if (features) {
      transform_features(feats + idx * per, x + i * per, C_, H_, W_, norm_);
    } else {
      transform_image(images + idx * per, x + i * per, C_, H_, W_, norm_, opts_.crop_padding,
                      augment_for(epoch_, idx));
    }
    if (opts_.spec_augment.enabled()) apply_masks(x + i * per, C_, H_, W_, masks_for(epoch_, idx));
  }
  return out;
}

void DataLoader::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return stop_ || requested_ >= 0; });
    if (stop_) return;
    const int64_t k = requested_;
    const uint64_t gen = generation_;
    requested_ = -1;
    busy_ = true;
    lk.unlock();
    Batch b;
    std::exception_ptr err;
    try {
      b = make_batch(k);
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    busy_ = false;
    if (gen == generation_) {
      result_ = std::move(b);
      error_ = err;
      result_index_ = k;
      has_result_ = true;
    }
    cv_.notify_all();
  }
}

void DataLoader::start_epoch(int64_t epoch) {
  std::unique_lock<std::mutex> lk(mu_);
  // The worker reads order_ and epoch_ without the lock while busy.
  cv_.wait(lk, [&] { return !busy_; });
  ++generation_;
  requested_ = -1;
  has_result_ = false;
  result_ = Batch();
  error_ = nullptr;
  started_ = true;
  epoch_ = epoch;
  order_ = epoch_order(epoch);
  cursor_ = 0;
  if (worker_.joinable() && num_batches_ > 0) {
    requested_ = 0;
    cv_.notify_all();
  }
}

bool DataLoader::next(Batch& out) {
  if (!started_) start_epoch(0);
  if (cursor_ >= num_batches_) return false;
  if (!worker_.joinable()) {
    out = make_batch(cursor_);
    ++cursor_;
    return true;
  }
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return has_result_ && result_index_ == cursor_; });
  has_result_ = false;
  if (error_) {
    std::exception_ptr err = error_;
    error_ = nullptr;
    cursor_ = num_batches_;  // the epoch cannot go on past a failed batch
    std::rethrow_exception(err);
  }
  out = std::move(result_);
  result_ = Batch();
  ++cursor_;
  if (cursor_ < num_batches_) {
    requested_ = cursor_;
    cv_.notify_all();
  }
  return true;
}

}  // namespace mel::data
