// Per-sample transforms for training batches: u8 -> f32 scaling and per-channel normalisation
// through a lookup table, random crop from a zero-padded image and horizontal flip; for f32
// feature maps (log-mel spectrograms) normalisation and SpecAugment-style masking.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mel::data {

// table(c)[v] = (v / 255 - mean[c]) / std[c], computed in double and rounded once, so every
// path (loader, evaluation, tests) yields the same float for the same byte.
class Normalizer {
 public:
  // mean and std hold one value per channel, one value for all channels, or nothing (0 and 1).
  Normalizer(int64_t channels, const std::vector<float>& mean, const std::vector<float>& std);
  const float* table(int64_t c) const { return lut_.data() + c * 256; }
  int64_t channels() const { return channels_; }
  // For f32 features: (x - mean[c]) / std[c] in double, rounded once.
  float apply(int64_t c, float x) const {
    return static_cast<float>((static_cast<double>(x) - mean_[static_cast<size_t>(c)]) /
                              std_[static_cast<size_t>(c)]);
  }

 private:
  int64_t channels_;
  std::vector<float> lut_;          // [channels, 256]
  std::vector<double> mean_, std_;  // [channels]
};

// Crop offsets into the image padded by `pad` on every side (each in [0, 2 * pad]) and a flip.
struct Augment {
  int64_t dy = 0, dx = 0;
  bool flip = false;
};

// One [C, H, W] image: dst[c][y][x] = table(c)[padded[c][y + dy][x' + dx]] with x' = W - 1 - x
// when flipping (crop, then mirror) and padded pixels reading as byte 0.
void transform_image(const uint8_t* src, float* dst, int64_t C, int64_t H, int64_t W,
                     const Normalizer& norm, int64_t pad, const Augment& aug);

// One f32 [C, H, W] feature map: dst[c] = norm.apply(c, src[c]) element by element.
void transform_features(const float* src, float* dst, int64_t C, int64_t H, int64_t W,
                        const Normalizer& norm);

// SpecAugment-style masking (Park et al. 2019) of a [C, F, T] feature map: `freq_masks` bands of
// rows (frequency, H) and `time_masks` stretches of columns (time, W), each of a width drawn in
// [0, max width], set to 0 (the mean, after normalisation) in every channel.
struct SpecAugment {
  int64_t freq_masks = 0, freq_width = 0;
  int64_t time_masks = 0, time_width = 0;
  bool enabled() const {
    return (freq_masks > 0 && freq_width > 0) || (time_masks > 0 && time_width > 0);
  }
};
// One mask: rows (or columns) [start, start + width).
struct Mask {
  bool time = false;
  int64_t start = 0, width = 0;
};
// The masks of one sample from a 64-bit random key, for a map of F rows and T columns.
std::vector<Mask> draw_masks(const SpecAugment& s, int64_t F, int64_t T, uint64_t key);
void apply_masks(float* map, int64_t C, int64_t F, int64_t T, const std::vector<Mask>& masks);

// u8 images or f32 features [N, C, H, W] -> normalised f32 [N, C, H, W] without augmentation
// (evaluation, inspection).
Tensor normalize_images(const Tensor& images, const std::vector<float>& mean,
                        const std::vector<float>& std);

// Per-channel mean and (population) standard deviation of u8 [N, C, H, W] images scaled to
// [0, 1], or of f32 features as they are: the values to pass as LoaderOptions::mean / std.
std::pair<std::vector<float>, std::vector<float>> channel_stats(const Tensor& images);

}  // namespace mel::data
