// Audio files (data/audio): WAV files that libsndfile writes in every common format read back
// within their quantisation, from a file or from memory; read_clip's checks and every read error
// name the file and what was expected. Log-mel features (data/logmel): the FFTW path against the
// direct definition, the filterbank against torchaudio's formula, a sine in its band, the frame
// count, option validation and concurrent use.
#include <gtest/gtest.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numbers>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "data/audio.h"
#include "data/logmel.h"
#include "tests/gradcheck.h"
#include "tests/temp_dir.h"

namespace mel::data::audio_test {
namespace {

using Dir = ::mel::testing::TempDir;

// Writes interleaved `x` with libsndfile itself in `format` (SF_FORMAT_WAV | SF_FORMAT_PCM_16...).
void write_with_sndfile(const std::string& path, int format, int sample_rate, int channels,
                        const std::vector<float>& x) {
  SF_INFO info{};
  info.samplerate = sample_rate;
  info.channels = channels;
  info.format = format;
  ASSERT_TRUE(sf_format_check(&info)) << "format 0x" << std::hex << format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  ASSERT_EQ(sf_writef_float(f, x.data(), static_cast<sf_count_t>(x.size() / channels)),
            static_cast<sf_count_t>(x.size() / channels));
  ASSERT_EQ(sf_close(f), 0);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A deterministic test signal in [-0.9, 0.9].
std::vector<float> signal(size_t n, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.9f, 0.9f);
  std::vector<float> x(n);
  for (float& v : x) v = u(rng);
  return x;
}

TEST(AudioIO, ReadsEveryWavFormatWithinItsQuantisation) {
  const Dir dir("mel_audio_");
  struct Case {
    const char* name;
    int format, sample_rate, channels;
    double tolerance;
  };
  const Case cases[] = {
      {"pcm16.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 2.0 / 32768},
      {"pcm24.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_24, 16000, 1, 2.0 / (1 << 23)},
      {"pcm32.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_32, 16000, 1, 1e-7},
      {"float.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, 0.0},
      {"double.wav", SF_FORMAT_WAV | SF_FORMAT_DOUBLE, 16000, 1, 0.0},
      {"u8.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_U8, 16000, 1, 2.0 / 128},
      {"stereo.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 2, 2.0 / 32768},
      {"rate8k.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, 2.0 / 32768},
      {"rate22k.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 22050, 2, 2.0 / 32768},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<float> x = signal(static_cast<size_t>(301 * c.channels));
    write_with_sndfile(dir / c.name, c.format, c.sample_rate, c.channels, x);
    const Audio a = read_audio(dir / c.name);
    EXPECT_EQ(a.sample_rate, c.sample_rate);
    EXPECT_EQ(a.channels, c.channels);
    EXPECT_EQ(a.frames(), 301);
    ASSERT_EQ(a.samples.size(), x.size());
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i)
      worst = std::max(worst, std::abs(double{a.samples[i]} - x[i]));
    EXPECT_LE(worst, c.tolerance);
    // the same bytes through virtual I/O
    const std::string bytes = slurp(dir / c.name);
    const Audio m = read_audio_memory(bytes.data(), bytes.size(), c.name);
    EXPECT_EQ(m.sample_rate, a.sample_rate);
    EXPECT_EQ(m.channels, a.channels);
    EXPECT_EQ(m.samples, a.samples);
  }
}

TEST(AudioIO, ReadsFlacWhenLibsndfileHasIt) {
  SF_INFO info{};
  info.samplerate = 16000;
  info.channels = 1;
  info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  if (!sf_format_check(&info)) GTEST_SKIP() << "this libsndfile was built without FLAC";
  const Dir dir("mel_audio_");
  const std::vector<float> x = signal(500);
  write_with_sndfile(dir / "a.flac", info.format, 16000, 1, x);
  const Audio a = read_audio(dir / "a.flac");
  EXPECT_EQ(a.sample_rate, 16000);
  ASSERT_EQ(a.samples.size(), x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(a.samples[i], x[i], 2.0 / 32768);
  // A FLAC file cut short decodes up to the cut without a libsndfile error: the frame count of
  // its STREAMINFO block shows it.
  write_with_sndfile(dir / "long.flac", info.format, 16000, 1, signal(20000));
  const std::string bytes = slurp(dir / "long.flac");
  spit(dir / "half.flac", bytes.substr(0, bytes.size() / 2));
  EXPECT_MEL_ERROR(read_audio(dir / "half.flac"), "half.flac", "truncated audio file",
                   "of the 20000 its header announces");
}

TEST(AudioIO, WriteWavRoundTripsAndClips) {
  const Dir dir("mel_audio_");
  Audio a;
  a.sample_rate = 16000;
  a.channels = 2;
  a.samples = {0.0f, 0.5f, -0.5f, 1.0f, -1.0f, 0.25f, 1.5f, -3.0f};
  write_wav(dir / "w.wav", a);
  const Audio b = read_audio(dir / "w.wav");
  EXPECT_EQ(b.sample_rate, 16000);
  EXPECT_EQ(b.channels, 2);
  ASSERT_EQ(b.samples.size(), a.samples.size());
  for (size_t i = 0; i < a.samples.size(); ++i) {
    EXPECT_NEAR(b.samples[i], std::clamp(a.samples[i], -1.0f, 1.0f), 2.0 / 32768) << i;
  }
  SF_INFO info{};
  SNDFILE* f = sf_open((dir / "w.wav").c_str(), SFM_READ, &info);
  ASSERT_NE(f, nullptr);
  sf_close(f);
  EXPECT_EQ(info.format, SF_FORMAT_WAV | SF_FORMAT_PCM_16);

  Audio bad = a;
  bad.samples.pop_back();
  EXPECT_MEL_ERROR(write_wav(dir / "x.wav", bad), "x.wav", "7 samples",
                   "whole number of 2-channel frames");
  bad = a;
  bad.channels = 0;
  EXPECT_MEL_ERROR(write_wav(dir / "x.wav", bad), "x.wav", "0 channels");
  EXPECT_MEL_ERROR(write_wav(dir / "no/such/dir/x.wav", a), "no/such/dir/x.wav", "cannot write");
}

TEST(AudioIO, FloatFilesAreClippedAndNonFiniteSamplesAreErrors) {
  const Dir dir("mel_audio_");
  write_with_sndfile(dir / "loud.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1,
                     {0.5f, 2.0f, -7.0f});
  EXPECT_EQ(read_audio(dir / "loud.wav").samples, (std::vector<float>{0.5f, 1.0f, -1.0f}));
  write_with_sndfile(dir / "nan.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1,
                     {0.5f, std::nanf(""), 0.0f});
  EXPECT_MEL_ERROR(read_audio(dir / "nan.wav"), "nan.wav", "sample 1 of channel 0 is nan");
}

TEST(AudioIO, ReadClipPadsShortClipsWithZeros) {
  const Dir dir("mel_audio_");
  const std::vector<float> x = signal(1000);
  write_with_sndfile(dir / "short.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, x);
  const std::vector<float> clip = read_clip(dir / "short.wav", 16000, 1600);
  ASSERT_EQ(clip.size(), 1600u);
  EXPECT_TRUE(std::equal(x.begin(), x.end(), clip.begin()));
  EXPECT_TRUE(std::all_of(clip.begin() + 1000, clip.end(), [](float v) { return v == 0.0f; }));
  EXPECT_EQ(read_clip(dir / "short.wav", 16000, 1000), x);  // exactly the length
}

TEST(AudioIO, ReadClipErrorsNameTheFileAndTheExpectation) {
  const Dir dir("mel_audio_");
  const std::vector<float> x = signal(1000);
  write_with_sndfile(dir / "rate8k.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, x);
  EXPECT_MEL_ERROR(read_clip(dir / "rate8k.wav", 16000, 16000), "rate8k.wav",
                   "sample rate 8000 Hz, expected 16000 Hz", "not resampled");
  write_with_sndfile(dir / "stereo.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 2, x);
  EXPECT_MEL_ERROR(read_clip(dir / "stereo.wav", 16000, 16000), "stereo.wav",
                   "2 channels, expected mono");
  write_with_sndfile(dir / "long.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, x);
  EXPECT_MEL_ERROR(read_clip(dir / "long.wav", 16000, 800), "long.wav", "1000 samples",
                   "longer than the expected 800 samples (0.050 s at 16000 Hz)");
  write_with_sndfile(dir / "silent.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1,
                     std::vector<float>(1000, 5e-5f));
  EXPECT_MEL_ERROR(read_clip(dir / "silent.wav", 16000, 16000), "silent.wav", "silence-only clip",
                   "below 0.0001", "expected speech or background noise");
  write_with_sndfile(dir / "zeros.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1,
                     std::vector<float>(1000, 0.0f));
  EXPECT_MEL_ERROR(read_clip(dir / "zeros.wav", 16000, 16000), "zeros.wav", "silence-only clip");
  EXPECT_MEL_ERROR(read_clip(dir / "absent.wav", 16000, 16000), "absent.wav", "cannot read audio",
                   "No such file");

  // libsndfile reads a WAV cut short as if its data chunk ended there (it only logs the
  // difference): read_audio reports it as truncated.
  const std::string good = slurp(dir / "long.wav");  // 44-byte header + 2000 data bytes
  ASSERT_EQ(good.size(), 2044u);
  spit(dir / "half.wav", good.substr(0, good.size() / 2));
  EXPECT_MEL_ERROR(read_clip(dir / "half.wav", 16000, 16000), "half.wav", "truncated audio file",
                   "should hold 2000 bytes but only 978 are present");
  EXPECT_MEL_ERROR(read_audio_memory(good.data(), good.size() / 2, "mem.wav"), "mem.wav",
                   "truncated audio file");
  write_with_sndfile(dir / "long.aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 16000, 1, x);
  const std::string aiff = slurp(dir / "long.aiff");
  spit(dir / "half.aiff", aiff.substr(0, aiff.size() / 2));
  EXPECT_MEL_ERROR(read_audio(dir / "half.aiff"), "half.aiff", "truncated audio file",
                   "the SSND chunk should hold");
  spit(dir / "header.wav", good.substr(0, 44));
  EXPECT_MEL_ERROR(read_clip(dir / "header.wav", 16000, 16000), "header.wav",
                   "truncated audio file", "only 0 are present");
  spit(dir / "cut.wav", good.substr(0, 30));  // inside the header
  EXPECT_MEL_ERROR(read_clip(dir / "cut.wav", 16000, 16000), "cut.wav", "cannot read audio",
                   "data");
  std::string empty_data = good.substr(0, 44);  // a complete header of an empty data chunk
  empty_data[40] = empty_data[41] = empty_data[42] = empty_data[43] = '\0';
  spit(dir / "nodata.wav", empty_data);
  EXPECT_MEL_ERROR(read_clip(dir / "nodata.wav", 16000, 16000), "nodata.wav", "no samples");
  spit(dir / "text.wav", "this is a text file, not audio at all: no RIFF header anywhere here\n");
  EXPECT_MEL_ERROR(read_clip(dir / "text.wav", 16000, 16000), "text.wav", "cannot read audio",
                   "Format not recognised");
  spit(dir / "empty.wav", "");
  EXPECT_MEL_ERROR(read_clip(dir / "empty.wav", 16000, 16000), "empty.wav", "cannot read audio");
  EXPECT_MEL_ERROR(read_audio_memory("", 0, "nothing.wav"), "nothing.wav", "empty file");
}

// ---- log-mel ----------------------------------------------------------------------------------

std::vector<double> to_double(const std::vector<float>& x) {
  return {x.begin(), x.end()};
}

TEST(LogMel, MatchesTheDirectDefinition) {
  std::vector<LogMelOptions> sets(6);
  sets[1].n_fft = 256;
  sets[1].win_length = 256;
  sets[1].hop_length = 100;
  sets[1].n_mels = 24;
  sets[2].n_fft = 400;  // not a power of two
  sets[2].window = "hamming";
  sets[3].f_min = 0.0;
  sets[3].f_max = 4000.0;
  sets[3].n_mels = 64;
  sets[4].sample_rate = 8000;
  sets[4].n_fft = 256;
  sets[4].win_length = 200;
  sets[4].hop_length = 80;
  sets[4].f_min = 300.0;
  sets[4].f_max = 3400.0;
  sets[4].n_mels = 20;
  sets[4].log_offset = 1e-3;
  sets[5].n_fft = 1024;
  sets[5].win_length = 1024;
  sets[5].hop_length = 512;
  sets[5].n_mels = 80;
  sets[5].window = "hamming";
  uint32_t seed = 10;
  for (const LogMelOptions& o : sets) {
    SCOPED_TRACE(::testing::Message() << "n_fft " << o.n_fft << " win " << o.win_length << " "
                                      << o.window << " mels " << o.n_mels);
    const LogMel lm(o);
    const std::vector<float> x = signal(2400 + seed, seed);
    ++seed;
    const int64_t T = lm.frames(static_cast<int64_t>(x.size()));
    std::vector<float> out(static_cast<size_t>(o.n_mels * T));
    lm.compute(x.data(), static_cast<int64_t>(x.size()), out.data());
    const std::vector<double> ref = log_mel_reference(o, to_double(x));
    ASSERT_EQ(ref.size(), out.size());
    double worst = 0;
    for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(out[i] - ref[i]));
    EXPECT_LT(worst, 1e-6);
    // quiet frames reach the offset's floor: a zero signal gives log(offset) everywhere
    const std::vector<float> zero(x.size(), 0.0f);
    lm.compute(zero.data(), static_cast<int64_t>(zero.size()), out.data());
    for (const float v : out) EXPECT_FLOAT_EQ(v, static_cast<float>(std::log(o.log_offset)));
  }
}

TEST(LogMel, FilterbankIsTorchaudiosHtkTriangles) {
  // melscale_fbanks(9, 0, 8000, 3, 16000, norm=None, mel_scale="htk"), computed in double from
  // its formula: mel points 0, 614.33, 1767.79, 3933.55, 8000 Hz, bins every 1000 Hz.
  LogMelOptions o;
  o.n_fft = 16;
  o.win_length = 16;
  o.n_mels = 3;
  o.f_min = 0.0;
  const std::vector<double> expected = {0,
                                        0.66563962061343718,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0.33436037938656277,
                                        0.89278238281490874,
                                        0.43105038131423878,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0,
                                        0.10721761718509136,
                                        0.56894961868576133,
                                        0.9836592123525143,
                                        0.73774440926438589,
                                        0.49182960617625737,
                                        0.24591480308812891,
                                        0};
  const LogMel lm(o);
  ASSERT_EQ(lm.filterbank().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(lm.filterbank()[i], expected[i], 1e-12);
  EXPECT_EQ(mel_filterbank(o), lm.filterbank());
  // the periodic windows of torch.hann_window / torch.hamming_window
  o.win_length = 8;
  const std::vector<double> hann = analysis_window(o);
  EXPECT_NEAR(hann[0], 0.0, 1e-15);
  EXPECT_NEAR(hann[2], 0.5, 1e-15);
  EXPECT_NEAR(hann[4], 1.0, 1e-15);
  o.window = "hamming";
  const std::vector<double> hamming = analysis_window(o);
  EXPECT_NEAR(hamming[0], 0.08, 1e-15);
  EXPECT_NEAR(hamming[4], 1.0, 1e-15);
}

TEST(LogMel, ASineLandsInTheBandThatHoldsItsFrequency) {
  const LogMelOptions o;  // 16 kHz, n_fft 512, 40 mels from 20 Hz
  const LogMel lm(o);
  const int64_t bins = o.n_fft / 2 + 1;
  for (const double f : {250.0, 1000.0, 3000.0, 6500.0}) {
    SCOPED_TRACE(f);
    std::vector<float> x(4000);
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = static_cast<float>(0.5 * std::sin(2 * std::numbers::pi * f * static_cast<double>(i) /
                                               static_cast<double>(o.sample_rate)));
    }
    const int64_t T = lm.frames(4000);
    std::vector<float> out(static_cast<size_t>(o.n_mels * T));
    lm.compute(x.data(), 4000, out.data());
    // the band whose triangle weighs f's bin the most
    const int64_t k = std::llround(f * static_cast<double>(o.n_fft) / o.sample_rate);
    int64_t band = 0;
    for (int64_t m = 1; m < o.n_mels; ++m) {
      if (lm.filterbank()[m * bins + k] > lm.filterbank()[band * bins + k]) band = m;
    }
    for (int64_t t = 0; t < T; ++t) {
      int64_t best = 0;
      for (int64_t m = 1; m < o.n_mels; ++m) {
        if (out[m * T + t] > out[best * T + t]) best = m;
      }
      EXPECT_EQ(best, band) << "frame " << t;
      // bands well away from f get almost nothing (a factor of e^8 ~ 3000 below)
      for (int64_t m = 0; m < o.n_mels; ++m) {
        if (std::abs(m - band) >= 4) {
          EXPECT_LT(out[m * T + t], out[band * T + t] - 8.0) << m;
        }
      }
    }
  }
}

TEST(LogMel, FramesCountWholeWindows) {
  const LogMel lm(LogMelOptions{});  // win 400, hop 160
  EXPECT_EQ(lm.frames(400), 1);
  EXPECT_EQ(lm.frames(559), 1);
  EXPECT_EQ(lm.frames(560), 2);
  EXPECT_EQ(lm.frames(16000), 98);
  EXPECT_MEL_ERROR(lm.frames(399), "399 samples", "win_length = 400");
  std::vector<float> x(100, 0.1f), out(40);
  EXPECT_MEL_ERROR(lm.compute(x.data(), 100, out.data()), "100 samples");
}

TEST(LogMel, ValidateNamesTheField) {
  auto with = [](auto edit) {
    LogMelOptions o;
    edit(o);
    return o;
  };
  EXPECT_NO_THROW(validate(LogMelOptions{}));
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.sample_rate = 0; })), "sample_rate = 0",
                   "positive");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.n_fft = -4; })), "n_fft = -4", "positive");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.win_length = 0; })), "win_length = 0");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.win_length = 600; })), "win_length = 600",
                   "at most n_fft (512)");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.hop_length = 0; })), "hop_length = 0");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.n_mels = 0; })), "n_mels = 0");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.f_min = -1; })), "f_min = -1");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.f_max = 9000; })), "f_max = 9000",
                   "sample_rate / 2 = 8000");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.f_min = 5000, o.f_max = 4000; })), "f_min = 5000",
                   "below f_max (4000 Hz)");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.f_min = 8000; })), "f_min = 8000",
                   "below f_max (8000 Hz)");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.log_offset = 0; })), "log_offset = 0");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.window = "blackman"; })), "window = 'blackman'",
                   "'hann' or 'hamming'");
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.n_mels = 300; })), "n_mels = 300", "257 FFT bins");
  // 128 bands from 20 Hz: the lowest are narrower than the 31.25 Hz bin spacing
  EXPECT_MEL_ERROR(validate(with([](auto& o) { o.n_mels = 128; })), "n_mels = 128",
                   "between two FFT bins", "31.25 Hz apart");
  EXPECT_MEL_ERROR(LogMel(with([](auto& o) { o.hop_length = -1; })), "hop_length = -1");
}

TEST(LogMel, ConcurrentComputeEqualsSequential) {
  LogMelOptions o;
  o.n_fft = 400;
  const LogMel lm(o);
  constexpr int kThreads = 4, kPerThread = 6;
  const int64_t n = 4000, T = lm.frames(n);
  std::vector<std::vector<float>> inputs, sequential;
  for (int i = 0; i < kThreads * kPerThread; ++i) {
    inputs.push_back(signal(static_cast<size_t>(n), 100 + i));
    sequential.emplace_back(static_cast<size_t>(o.n_mels * T));
    lm.compute(inputs.back().data(), n, sequential.back().data());
  }
  std::vector<std::vector<float>> parallel(inputs.size(),
                                           std::vector<float>(static_cast<size_t>(o.n_mels * T)));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // each thread also builds (plans) its own LogMel while the others compute
      const LogMel own(o);
      for (int i = t; i < kThreads * kPerThread; i += kThreads) {
        (i % 2 ? own : lm).compute(inputs[i].data(), n, parallel[i].data());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_EQ(parallel[i], sequential[i]) << i;
}

}  // namespace
}  // namespace mel::data::audio_test
