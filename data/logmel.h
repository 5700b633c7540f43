// Log-mel spectrograms (the input features of the audio models): frames of win_length samples
// every hop_length samples (no centering, no padding of the signal), windowed (periodic Hann or
// Hamming), zero-padded to n_fft, power spectrum |X_k|^2 for k = 0..n_fft/2 through FFTW (double
// precision), triangular filters on the HTK mel scale (mel = 2595 log10(1 + f/700)) with weights
// at the FFT bin frequencies k * sample_rate / n_fft as torchaudio.functional.melscale_fbanks
// (norm=None, mel_scale="htk") computes them, then log(mel power + log_offset).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mel::data {

struct LogMelOptions {
  int64_t sample_rate = 16000;
  int64_t n_fft = 512;       // FFT size (>= win_length), frames are zero-padded to it
  int64_t win_length = 400;  // 25 ms
  int64_t hop_length = 160;  // 10 ms
  int64_t n_mels = 40;
  double f_min = 20.0;
  double f_max = 0.0;           // 0: sample_rate / 2
  double log_offset = 1e-6;     // log(mel + offset)
  std::string window = "hann";  // "hann" (periodic, as torch.hann_window) or "hamming" (periodic)
};

// Checks every field: positive sizes, win_length <= n_fft, 0 <= f_min < f_max <= sample_rate / 2,
// every mel filter covering at least one FFT bin, log_offset > 0, a known window; errors name the
// field, its value and what is expected.
void validate(const LogMelOptions& o);

namespace detail {
struct FftPlan;
}

class LogMel {
 public:
  // Validates, builds the window, the mel filterbank and an FFTW plan (FFTW_ESTIMATE:
  // deterministic). Copies share the plan.
  explicit LogMel(LogMelOptions o);

  // 1 + (samples - win_length) / hop_length; an error when samples < win_length.
  int64_t frames(int64_t samples) const;
  // out: [n_mels, frames(n)] row-major, log(mel power + log_offset). Thread-safe: each call has
  // its own buffers and runs the shared plan through fftw_execute_dft_r2c.
  void compute(const float* x, int64_t n, float* out) const;

  const LogMelOptions& options() const { return o_; }
  const std::vector<double>& filterbank() const { return fb_; }  // [n_mels, n_fft/2+1]
  const std::vector<double>& window() const { return window_; }  // [win_length]

 private:
  LogMelOptions o_;
  std::vector<double> window_;
  std::vector<double> fb_;
  // Per mel band, the first and one-past-last bins with a nonzero weight.
  std::vector<int64_t> band_begin_, band_end_;
  std::shared_ptr<const detail::FftPlan> plan_;
};

// The window and the filterbank LogMel uses, for tests and other front ends.
std::vector<double> analysis_window(const LogMelOptions& o);
std::vector<double> mel_filterbank(const LogMelOptions& o);  // [n_mels, n_fft/2+1]

// The same features computed from the definition in double precision (a direct O(N^2) DFT per
// frame, the same window and filterbank), for tests: [n_mels, frames] row-major.
std::vector<double> log_mel_reference(const LogMelOptions& o, const std::vector<double>& x);

}  // namespace mel::data
