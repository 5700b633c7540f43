// DataLoader: shuffled, normalised and augmented f32 batches from an ImageDataset (u8 images or f32
// features), with the next batch prepared on a background thread while the caller trains on the
// current one.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "data/transforms.h"

namespace mel::data {

struct LoaderOptions {
  int64_t batch_size = 256;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int64_t limit = 0;             // use only the first `limit` samples (0 = all)
  std::vector<float> mean, std;  // per channel (or one for all), after scaling u8 to [0, 1]
  int64_t crop_padding = 0;      // random crop of the original size after zero padding (0 = off)
  bool hflip = false;            // random horizontal flip with p = 0.5
  SpecAugment spec_augment;      // masks over [C, H (frequency), W (time)] after normalisation
  bool prefetch = true;          // prepare the next batch on a background thread
};

// The sample order of an epoch and each sample's crop, flip and masks are pure functions of (seed,
// epoch, sample index), so batches do not depend on prefetching, threads or timing. Batches own
// fresh tensors: the caller may keep them as long as it likes.
class DataLoader : public BatchSource {
 public:
  // Keeps a reference to `ds`, which must outlive the loader.
  DataLoader(const ImageDataset& ds, LoaderOptions opts);
  ~DataLoader() override;  // joins the worker
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Restarts at batch 0 with the permutation of `epoch` (drops a batch prepared for the old one).
  void start_epoch(int64_t epoch) override;
  // The next batch of the epoch; false at its end. Starts epoch 0 if no epoch was started.
  // Rethrows an exception raised while preparing the batch.
  bool next(Batch& out) override;
  int64_t num_batches() const override { return num_batches_; }
  int64_t num_samples() const override { return n_; }  // after limit
  const LoaderOptions& options() const { return opts_; }

  // Dataset indices of `epoch` in visiting order (for tests and tools).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // The crop and flip of sample `index` in `epoch`.
  Augment augment_for(int64_t epoch, int64_t index) const;
  // The SpecAugment masks of sample `index` in `epoch` (empty when masking is off).
  std::vector<Mask> masks_for(int64_t epoch, int64_t index) const;

 private:
  Batch make_batch(int64_t k) const;
  void worker_loop();

  const ImageDataset& ds_;
  LoaderOptions opts_;
  Normalizer norm_;
  int64_t n_ = 0, num_batches_ = 0;
  int64_t C_ = 0, H_ = 0, W_ = 0;

  // Epoch state; written only while the worker is idle.
  bool started_ = false;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0;  // next batch next() returns

  // Worker hand-off, guarded by mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread worker_;
  bool stop_ = false;
  bool busy_ = false;
  int64_t requested_ = -1;   // batch the worker should make next, -1 for none
  uint64_t generation_ = 0;  // bumped by start_epoch so stale results are dropped
  bool has_result_ = false;
  int64_t result_index_ = -1;
  Batch result_;
  std::exception_ptr error_;
};

}  // namespace mel::data
