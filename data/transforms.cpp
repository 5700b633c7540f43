#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/random.h"

namespace mel::data {

namespace {

double pick(const std::vector<float>& v, int64_t c, double fallback) {
  if (v.empty()) return fallback;
  return v.size() == 1 ? v[0] : v[static_cast<size_t>(c)];
}

void check_images(const Tensor& images, const char* op) {
  MEL_CHECK(images.defined(), "{}: images are undefined", op);
  MEL_CHECK((images.dtype() == DType::u8 || images.dtype() == DType::f32) && images.dim() == 4 &&
                images.device().is_cpu(),
            "{}: expected u8 images or f32 features [N, C, H, W] on the CPU, got {} {} on {}", op,
            dtype_name(images.dtype()), shape_str(images.shape()), images.device().str());
}

}  // namespace

Normalizer::Normalizer(int64_t channels, const std::vector<float>& mean,
                       const std::vector<float>& std)
    : channels_(channels),
      lut_(static_cast<size_t>(channels) * 256),
      mean_(static_cast<size_t>(channels)),
      std_(static_cast<size_t>(channels)) {
  const auto ok = [&](const std::vector<float>& v) {
    return v.empty() || v.size() == 1 || static_cast<int64_t>(v.size()) == channels;
  };
  MEL_CHECK(ok(mean) && ok(std),
            "normalisation: mean has {} and std {} values for images of {} channel(s) (expected "
            "{} values, one, or none)",
            mean.size(), std.size(), channels, channels);
  for (int64_t c = 0; c < channels; ++c) {
    const double m = pick(mean, c, 0.0), s = pick(std, c, 1.0);
    MEL_CHECK(std::isfinite(m) && std::isfinite(s) && s > 0,
              "normalisation: channel {} has mean {} and std {} (std must be positive and both "
              "finite)",
              c, m, s);
    mean_[static_cast<size_t>(c)] = m;
    std_[static_cast<size_t>(c)] = s;
    for (int v = 0; v < 256; ++v) {
      lut_[static_cast<size_t>(c * 256 + v)] = static_cast<float>((v / 255.0 - m) / s);
    }
  }
}

void transform_image(const uint8_t* src, float* dst, int64_t C, int64_t H, int64_t W,
                     const Normalizer& norm, int64_t pad, const Augment& aug) {
  const int64_t plane = H * W;
  if (pad == 0 && !aug.flip) {
    for (int64_t c = 0; c < C; ++c) {
      const float* t = norm.table(c);
      const uint8_t* s = src + c * plane;
      float* d = dst + c * plane;
      for (int64_t i = 0; i < plane; ++i) d[i] = t[s[i]];
    }
    return;
  }
  const int64_t oy = aug.dy - pad, ox = aug.dx - pad;  // source = output + offset
  for (int64_t c = 0; c < C; ++c) {
    const float* t = norm.table(c);
    const float zero = t[0];
    for (int64_t y = 0; y < H; ++y) {
      float* d = dst + c * plane + y * W;
      const int64_t sy = y + oy;
      if (sy < 0 || sy >= H) {
        for (int64_t x = 0; x < W; ++x) d[x] = zero;
        continue;
      }
      const uint8_t* row = src + c * plane + sy * W;
      // Output columns whose source column lies inside the image: [x0, x1).
      if (!aug.flip) {
        const int64_t x0 = std::clamp<int64_t>(-ox, 0, W);
        const int64_t x1 = std::clamp<int64_t>(W - ox, x0, W);
        for (int64_t x = 0; x < x0; ++x) d[x] = zero;
        for (int64_t x = x0; x < x1; ++x) d[x] = t[row[x + ox]];
        for (int64_t x = x1; x < W; ++x) d[x] = zero;
      } else {
        // source column = W - 1 - x + ox
        for (int64_t x = 0; x < W; ++x) {
          const int64_t sx = W - 1 - x + ox;
          d[x] = (sx >= 0 && sx < W) ? t[row[sx]] : zero;
        }
      }
    }
  }
}

void transform_features(const float* src, float* dst, int64_t C, int64_t H, int64_t W,
                        const Normalizer& norm) {
  const int64_t plane = H * W;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < plane; ++i) dst[c * plane + i] = norm.apply(c, src[c * plane + i]);
  }
}

std::vector<Mask> draw_masks(const SpecAugment& s, int64_t F, int64_t T, uint64_t key) {
  std::vector<Mask> out;
  uint64_t state = key;
  const auto draw = [&](int64_t range) {  // uniform enough in [0, range) for small ranges
    state = splitmix64(state);
    return static_cast<int64_t>((state >> 11) % static_cast<uint64_t>(range));
  };
  const auto add = [&](bool time, int64_t count, int64_t max_width, int64_t size) {
    const int64_t cap = std::min(max_width, size);
    for (int64_t k = 0; k < count && cap > 0; ++k) {
      const int64_t w = draw(cap + 1);
      const int64_t start = draw(size - w + 1);
      if (w > 0) out.push_back({time, start, w});
    }
  };
  add(false, s.freq_masks, s.freq_width, F);
  add(true, s.time_masks, s.time_width, T);
  return out;
}

void apply_masks(float* map, int64_t C, int64_t F, int64_t T, const std::vector<Mask>& masks) {
  for (const Mask& m : masks) {
    for (int64_t c = 0; c < C; ++c) {
      float* p = map + c * F * T;
      if (m.time) {
        for (int64_t f = 0; f < F; ++f)
          std::fill(p + f * T + m.start, p + f * T + m.start + m.width, 0.0f);
      } else {
        std::fill(p + m.start * T, p + (m.start + m.width) * T, 0.0f);
      }
    }
  }
}

Tensor normalize_images(const Tensor& images, const std::vector<float>& mean,
                        const std::vector<float>& std) {
  check_images(images, "normalize_images");
  const Tensor src = images.contiguous();
  const int64_t n = src.size(0), C = src.size(1), H = src.size(2), W = src.size(3);
  const Normalizer norm(C, mean, std);
  Tensor out = empty(src.shape(), DType::f32);
  float* d = out.data<float>();
  const int64_t per = C * H * W;
  if (src.dtype() == DType::f32) {
    const float* s = src.data<float>();
#pragma omp parallel for schedule(static) if (n * per > (1 << 16))
    for (int64_t i = 0; i < n; ++i) transform_features(s + i * per, d + i * per, C, H, W, norm);
    return out;
  }
  const uint8_t* s = src.data<uint8_t>();
#pragma omp parallel for schedule(static) if (n * per > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    transform_image(s + i * per, d + i * per, C, H, W, norm, 0, Augment{});
  }
  return out;
}

std::pair<std::vector<float>, std::vector<float>> channel_stats(const Tensor& images) {
  check_images(images, "channel_stats");
  const Tensor src = images.contiguous();
  const int64_t n = src.size(0), C = src.size(1), plane = src.size(2) * src.size(3);
  MEL_CHECK(n * plane > 0, "channel_stats: no pixels in images of shape {}",
            shape_str(src.shape()));
  if (src.dtype() == DType::f32) {
    std::vector<float> mean(static_cast<size_t>(C)), stdev(static_cast<size_t>(C));
    const float* f = src.data<float>();
    for (int64_t c = 0; c < C; ++c) {
      double s1 = 0, s2 = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float* p = f + (i * C + c) * plane;
        for (int64_t k = 0; k < plane; ++k) {
          s1 += p[k];
          s2 += static_cast<double>(p[k]) * p[k];
        }
      }
      const double count = static_cast<double>(n * plane), m = s1 / count;
      mean[static_cast<size_t>(c)] = static_cast<float>(m);
      stdev[static_cast<size_t>(c)] =
          static_cast<float>(std::sqrt(std::max(0.0, s2 / count - m * m)));
    }
    return {mean, stdev};
  }
  // Byte histograms make the sums exact whatever the data set size.
  std::vector<std::vector<uint64_t>> hist(static_cast<size_t>(C), std::vector<uint64_t>(256, 0));
  const uint8_t* s = src.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < C; ++c) {
      const uint8_t* p = s + (i * C + c) * plane;
      uint64_t* h = hist[static_cast<size_t>(c)].data();
      for (int64_t k = 0; k < plane; ++k) ++h[p[k]];
    }
  }
  std::vector<float> mean(static_cast<size_t>(C)), stdev(static_cast<size_t>(C));
  const double count = static_cast<double>(n * plane);
  for (int64_t c = 0; c < C; ++c) {
    double s1 = 0, s2 = 0;
    for (int v = 0; v < 256; ++v) {
      const double x = v / 255.0, k = static_cast<double>(hist[static_cast<size_t>(c)][v]);
      s1 += k * x;
      s2 += k * x * x;
    }
    const double m = s1 / count;
    mean[static_cast<size_t>(c)] = static_cast<float>(m);
    stdev[static_cast<size_t>(c)] =
        static_cast<float>(std::sqrt(std::max(0.0, s2 / count - m * m)));
  }
  return {mean, stdev};
}

}  // namespace mel::data
