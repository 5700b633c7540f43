#include "data/logmel.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numbers>

#include "core/error.h"

namespace mel::data {
namespace {

// FFTW's planner (plan creation and destruction) is not thread-safe; executing a plan is.
std::mutex& fftw_planner_mutex() {
  static std::mutex m;
  return m;
}

double hz_to_mel(double f) {
  return 2595.0 * std::log10(1.0 + f / 700.0);
}
double mel_to_hz(double m) {
  return 700.0 * (std::pow(10.0, m / 2595.0) - 1.0);
}

double effective_f_max(const LogMelOptions& o) {
  return o.f_max == 0.0 ? static_cast<double>(o.sample_rate) / 2.0 : o.f_max;
}

// torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk"): n_mels + 2 points equally
// spaced on the mel scale from f_min to f_max; filter m rises from point m to point m + 1 and falls
// to point m + 2, evaluated at the FFT bin frequencies k * sample_rate / n_fft (the same as
// torchaudio's linspace(0, sample_rate // 2, n_fft // 2 + 1) for even sizes and rates).
std::vector<double> build_filterbank(const LogMelOptions& o) {
  const int64_t bins = o.n_fft / 2 + 1;
  const double m_min = hz_to_mel(o.f_min), m_max = hz_to_mel(effective_f_max(o));
  std::vector<double> f_pts(static_cast<size_t>(o.n_mels + 2));
  for (int64_t i = 0; i < o.n_mels + 2; ++i) {
    f_pts[i] = mel_to_hz(m_min + (m_max - m_min) * static_cast<double>(i) /
                                     static_cast<double>(o.n_mels + 1));
  }
  std::vector<double> fb(static_cast<size_t>(o.n_mels * bins), 0.0);
  for (int64_t m = 0; m < o.n_mels; ++m) {
    const double lo = f_pts[m], mid = f_pts[m + 1], hi = f_pts[m + 2];
    for (int64_t k = 0; k < bins; ++k) {
      const double f = static_cast<double>(k) * static_cast<double>(o.sample_rate) /
                       static_cast<double>(o.n_fft);
      const double down = (f - lo) / (mid - lo), up = (hi - f) / (hi - mid);
      fb[m * bins + k] = std::max(0.0, std::min(down, up));
    }
  }
  return fb;
}

struct FftwFree {
  void operator()(void* p) const { fftw_free(p); }
};

}  // namespace

namespace detail {

struct FftPlan {
  fftw_plan plan = nullptr;
  explicit FftPlan(int64_t n) {
    std::unique_ptr<double, FftwFree> in(fftw_alloc_real(static_cast<size_t>(n)));
    std::unique_ptr<fftw_complex, FftwFree> out(fftw_alloc_complex(static_cast<size_t>(n / 2 + 1)));
    MEL_CHECK(in && out, "LogMel: cannot allocate the FFT buffers (n_fft = {})", n);
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    plan = fftw_plan_dft_r2c_1d(static_cast<int>(n), in.get(), out.get(), FFTW_ESTIMATE);
    MEL_CHECK(plan, "LogMel: FFTW could not plan a real FFT of size {}", n);
  }
  ~FftPlan() {
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    fftw_destroy_plan(plan);
  }
  FftPlan(const FftPlan&) = delete;
  FftPlan& operator=(const FftPlan&) = delete;
};

}  // namespace detail

void validate(const LogMelOptions& o) {
  MEL_CHECK(o.sample_rate > 0, "LogMelOptions.sample_rate = {}: must be positive (Hz)",
            o.sample_rate);
  MEL_CHECK(o.n_fft > 0 && o.n_fft <= (int64_t{1} << 24),
            "LogMelOptions.n_fft = {}: must be positive (and at most 2^24)", o.n_fft);
  MEL_CHECK(o.win_length > 0, "LogMelOptions.win_length = {}: must be positive", o.win_length);
  MEL_CHECK(o.win_length <= o.n_fft, "LogMelOptions.win_length = {}: must be at most n_fft ({})",
            o.win_length, o.n_fft);
  MEL_CHECK(o.hop_length > 0, "LogMelOptions.hop_length = {}: must be positive", o.hop_length);
  MEL_CHECK(o.n_mels > 0, "LogMelOptions.n_mels = {}: must be positive", o.n_mels);
  const double nyquist = static_cast<double>(o.sample_rate) / 2.0;
  MEL_CHECK(std::isfinite(o.f_min) && o.f_min >= 0.0,
            "LogMelOptions.f_min = {}: must be a frequency >= 0 Hz", o.f_min);
  MEL_CHECK(std::isfinite(o.f_max) && o.f_max >= 0.0 && o.f_max <= nyquist,
            "LogMelOptions.f_max = {}: must be at most sample_rate / 2 = {} Hz (0: sample_rate / "
            "2)",
            o.f_max, nyquist);
  const double f_max = effective_f_max(o);
  MEL_CHECK(o.f_min < f_max, "LogMelOptions.f_min = {}: must be below f_max ({} Hz)", o.f_min,
            f_max);
  MEL_CHECK(std::isfinite(o.log_offset) && o.log_offset > 0.0,
            "LogMelOptions.log_offset = {}: must be positive (log(mel + offset))", o.log_offset);
  MEL_CHECK(o.window == "hann" || o.window == "hamming",
            "LogMelOptions.window = '{}': unknown window (expected 'hann' or 'hamming')", o.window);
  MEL_CHECK(o.n_mels <= o.n_fft / 2 + 1,
            "LogMelOptions.n_mels = {}: more mel bands than the {} FFT bins of n_fft = {}",
            o.n_mels, o.n_fft / 2 + 1, o.n_fft);
  // Every filter must weigh at least one bin: a band narrower than the bin spacing can fall
  // between two bins and would always be log(offset).
  const std::vector<double> fb = build_filterbank(o);
  const int64_t bins = o.n_fft / 2 + 1;
  for (int64_t m = 0; m < o.n_mels; ++m) {
    const auto row = fb.begin() + m * bins;
    MEL_CHECK(std::any_of(row, row + bins, [](double w) { return w > 0.0; }),
              "LogMelOptions.n_mels = {}: mel band {} lies between two FFT bins ({:.2f} Hz apart "
              "with n_fft = {} at {} Hz) and would be empty: use fewer mel bands, a larger n_fft "
              "or a wider f_min..f_max",
              o.n_mels, m, static_cast<double>(o.sample_rate) / static_cast<double>(o.n_fft),
              o.n_fft, o.sample_rate);
  }
}

std::vector<double> analysis_window(const LogMelOptions& o) {
  validate(o);
  const double a = o.window == "hann" ? 0.5 : 0.54;
  std::vector<double> w(static_cast<size_t>(o.win_length));
  for (int64_t n = 0; n < o.win_length; ++n) {
    w[n] = a - (1.0 - a) * std::cos(2.0 * std::numbers::pi * static_cast<double>(n) /
                                    static_cast<double>(o.win_length));
  }
  return w;
}

std::vector<double> mel_filterbank(const LogMelOptions& o) {
  validate(o);
  return build_filterbank(o);
}

LogMel::LogMel(LogMelOptions o)
    : o_(std::move(o)), window_(analysis_window(o_)), fb_(build_filterbank(o_)) {
  const int64_t bins = o_.n_fft / 2 + 1;
  band_begin_.assign(static_cast<size_t>(o_.n_mels), 0);
  band_end_.assign(static_cast<size_t>(o_.n_mels), 0);
  for (int64_t m = 0; m < o_.n_mels; ++m) {
    const double* row = fb_.data() + m * bins;
    int64_t b = 0, e = bins;
    while (b < bins && row[b] == 0.0) ++b;
    while (e > b && row[e - 1] == 0.0) --e;
    band_begin_[m] = b;
    band_end_[m] = e;
  }
  plan_ = std::make_shared<const detail::FftPlan>(o_.n_fft);
}

int64_t LogMel::frames(int64_t samples) const {
  MEL_CHECK(samples >= o_.win_length,
            "LogMel: {} samples are fewer than one window (win_length = {})", samples,
            o_.win_length);
  return 1 + (samples - o_.win_length) / o_.hop_length;
}

void LogMel::compute(const float* x, int64_t n, float* out) const {
  const int64_t frames_n = frames(n);
  const int64_t bins = o_.n_fft / 2 + 1;
  std::unique_ptr<double, FftwFree> in(fftw_alloc_real(static_cast<size_t>(o_.n_fft)));
  std::unique_ptr<fftw_complex, FftwFree> spec(fftw_alloc_complex(static_cast<size_t>(bins)));
  MEL_CHECK(in && spec, "LogMel: cannot allocate the FFT buffers (n_fft = {})", o_.n_fft);
  std::vector<double> power(static_cast<size_t>(bins));
  std::fill(in.get() + o_.win_length, in.get() + o_.n_fft, 0.0);
  for (int64_t t = 0; t < frames_n; ++t) {
    const float* frame = x + t * o_.hop_length;
    for (int64_t i = 0; i < o_.win_length; ++i) {
      in.get()[i] = window_[i] * static_cast<double>(frame[i]);
    }
    // The new-array execute is thread-safe; fftw_alloc_* gives the alignment the plan assumes.
    fftw_execute_dft_r2c(plan_->plan, in.get(), spec.get());
    for (int64_t k = 0; k < bins; ++k) {
      power[k] = spec.get()[k][0] * spec.get()[k][0] + spec.get()[k][1] * spec.get()[k][1];
    }
    for (int64_t m = 0; m < o_.n_mels; ++m) {
      const double* row = fb_.data() + m * bins;
      double s = 0.0;
      for (int64_t k = band_begin_[m]; k < band_end_[m]; ++k) s += row[k] * power[k];
      out[m * frames_n + t] = static_cast<float>(std::log(s + o_.log_offset));
    }
  }
}

std::vector<double> log_mel_reference(const LogMelOptions& o, const std::vector<double>& x) {
  const std::vector<double> w = analysis_window(o), fb = mel_filterbank(o);
  const int64_t n = static_cast<int64_t>(x.size()), N = o.n_fft, bins = N / 2 + 1;
  MEL_CHECK(n >= o.win_length, "log_mel_reference: {} samples are fewer than win_length = {}", n,
            o.win_length);
  const int64_t frames_n = 1 + (n - o.win_length) / o.hop_length;
  // cos and sin of 2 pi j / N: the DFT's twiddles, indexed by k * i mod N.
  std::vector<double> c(static_cast<size_t>(N)), s(static_cast<size_t>(N));
  for (int64_t j = 0; j < N; ++j) {
    c[j] = std::cos(2.0 * std::numbers::pi * static_cast<double>(j) / static_cast<double>(N));
    s[j] = std::sin(2.0 * std::numbers::pi * static_cast<double>(j) / static_cast<double>(N));
  }
  std::vector<double> out(static_cast<size_t>(o.n_mels * frames_n)), frame(w.size()),
      power(static_cast<size_t>(bins));
  for (int64_t t = 0; t < frames_n; ++t) {
    for (int64_t i = 0; i < o.win_length; ++i) frame[i] = w[i] * x[t * o.hop_length + i];
    // samples win_length..n_fft-1 are the zero padding: they add nothing
    for (int64_t k = 0; k < bins; ++k) {
      double re = 0.0, im = 0.0;
      int64_t j = 0;
      for (int64_t i = 0; i < o.win_length; ++i) {
        re += frame[i] * c[j];
        im -= frame[i] * s[j];
        j += k;
        if (j >= N) j -= N;
      }
      power[k] = re * re + im * im;
    }
    for (int64_t m = 0; m < o.n_mels; ++m) {
      double e = 0.0;
      for (int64_t k = 0; k < bins; ++k) e += fb[m * bins + k] * power[k];
      out[m * frames_n + t] = std::log(e + o.log_offset);
    }
  }
  return out;
}

}  // namespace mel::data
