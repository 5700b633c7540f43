#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace mel::data {

namespace {

double pick(const std::vector<float>& v, int64_t c, double fallback) {
  if (v.empty()) return fallback;
  return v.size() == 1 ? v[0] : v[static_cast<size_t>(c)];
}

void check_images(const Tensor& images, const char* op) {
  MEL_CHECK(images.defined(), "{}: images are undefined", op);
  MEL_CHECK(images.dtype() == DType::u8 && images.dim() == 4 && images.device().is_cpu(),
            "{}: expected u8 CPU images [N, C, H, W], got {} {} on {}", op,
            dtype_name(images.dtype()), shape_str(images.shape()), images.device().str());
}

}  // namespace

Normalizer::Normalizer(int64_t channels, const std::vector<float>& mean,
                       const std::vector<float>& std)
    : channels_(channels), lut_(static_cast<size_t>(channels) * 256) {
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

Tensor normalize_images(const Tensor& images, const std::vector<float>& mean,
                        const std::vector<float>& std) {
  check_images(images, "normalize_images");
  const Tensor src = images.contiguous();
  const int64_t n = src.size(0), C = src.size(1), H = src.size(2), W = src.size(3);
  const Normalizer norm(C, mean, std);
  Tensor out = empty(src.shape(), DType::f32);
  const uint8_t* s = src.data<uint8_t>();
  float* d = out.data<float>();
  const int64_t per = C * H * W;
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
