// Per-image transforms for training batches: u8 -> f32 scaling and per-channel normalisation
// through a lookup table, random crop from a zero-padded image and horizontal flip.
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

 private:
  int64_t channels_;
  std::vector<float> lut_;  // [channels, 256]
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

// u8 [N, C, H, W] -> normalised f32 [N, C, H, W] without augmentation (evaluation, inspection).
Tensor normalize_images(const Tensor& images, const std::vector<float>& mean,
                        const std::vector<float>& std);

// Per-channel mean and (population) standard deviation of u8 [N, C, H, W] images scaled to
// [0, 1]: the values to pass as LoaderOptions::mean / std.
std::pair<std::vector<float>, std::vector<float>> channel_stats(const Tensor& images);

}  // namespace mel::data
