#include "data/audio.h"

#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>

#include "core/error.h"

namespace mel::data {
namespace {

// Samples read per sf_readf_float call; the buffer grows with what is actually there, never with
// what a (possibly corrupt) header claims.
constexpr sf_count_t kChunkFrames = 1 << 14;
// At most 2^31 samples (8 GiB of floats, about 37 hours of 16 kHz stereo).
constexpr int64_t kMaxSamples = int64_t{1} << 31;

// libsndfile's virtual I/O over bytes in memory.
struct MemoryFile {
  const unsigned char* data;
  sf_count_t size;
  sf_count_t pos;
};

sf_count_t mem_length(void* user) {
  return static_cast<MemoryFile*>(user)->size;
}

sf_count_t mem_seek(sf_count_t offset, int whence, void* user) {
  auto* m = static_cast<MemoryFile*>(user);
  sf_count_t base = 0;
  if (whence == SEEK_CUR) base = m->pos;
  if (whence == SEEK_END) base = m->size;
  // Offsets come from the file's own headers: no overflow, no position before the start (a
  // negative return is a failed seek); a position past the end reads nothing.
  if (offset < -base || (offset > 0 && offset > SF_COUNT_MAX - base)) return -1;
  m->pos = base + offset;
  return m->pos;
}

sf_count_t mem_read(void* ptr, sf_count_t count, void* user) {
  auto* m = static_cast<MemoryFile*>(user);
  if (count <= 0 || m->pos >= m->size) return 0;
  const sf_count_t n = std::min(count, m->size - m->pos);
  std::memcpy(ptr, m->data + m->pos, static_cast<size_t>(n));
  m->pos += n;
  return n;
}

sf_count_t mem_write(const void*, sf_count_t, void*) {
  return 0;
}

sf_count_t mem_tell(void* user) {
  return static_cast<MemoryFile*>(user)->pos;
}

struct Closer {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using File = std::unique_ptr<SNDFILE, Closer>;

std::string log_of(SNDFILE* f) {
  char buf[8192] = {};
  sf_command(f, SFC_GET_LOG_INFO, buf, sizeof(buf) - 1);
  return buf;
}

// libsndfile reads a WAV or AIFF file whose data chunk ("data", "SSND") goes past the end of the
// file as if the chunk ended there: it only logs "data : <header's size> (should be <bytes
// present>)". That is a truncated download or copy, reported as such; a header size of 0xFFFFFFFF
// is the placeholder streaming writers leave, not a truncation. (W64 and RF64 files cut short are
// not caught: libsndfile's log does not say.)
void check_not_truncated(SNDFILE* f, const std::string& name) {
  const std::string log = log_of(f);
  for (const std::string_view tag : {"data :", "SSND :"}) {
    for (size_t p = log.find(tag); p != std::string::npos; p = log.find(tag, p + tag.size())) {
      if (p != 0 && log[p - 1] != '\n' && log[p - 1] != ' ') continue;
      const char* s = log.c_str() + p + tag.size();
      char* end = nullptr;
      const long long header = std::strtoll(s, &end, 10);
      constexpr std::string_view kShould = " (should be ";
      if (end == s || std::string_view(end).substr(0, kShould.size()) != kShould) continue;
      const long long present = std::strtoll(end + kShould.size(), nullptr, 10);
      MEL_CHECK(header <= present || header == 0xffffffffLL,
                "{}: truncated audio file: the {} chunk should hold {} bytes but only {} are "
                "present",
                name, tag.substr(0, 4), header, present);
    }
  }
}

Audio decode(SNDFILE* raw, const SF_INFO& info, const std::string& name) {
  File f(raw);
  check_not_truncated(f.get(), name);
  MEL_CHECK(info.channels >= 1, "{}: the audio file has {} channels", name, info.channels);
  MEL_CHECK(info.samplerate >= 1, "{}: the audio file has a sample rate of {} Hz", name,
            info.samplerate);
  Audio a;
  a.sample_rate = info.samplerate;
  a.channels = info.channels;
  // float and double files: no scaling (libsndfile's default for reading floats as floats).
  std::vector<float> chunk(static_cast<size_t>(kChunkFrames * info.channels));
  if (info.frames > 0 && info.frames < kMaxSamples / info.channels) {
    a.samples.reserve(
        static_cast<size_t>(std::min<sf_count_t>(info.frames, 1 << 22) * info.channels));
  }
  for (;;) {
    const sf_count_t got = sf_readf_float(f.get(), chunk.data(), kChunkFrames);
    if (got <= 0) break;
    MEL_CHECK(static_cast<int64_t>(a.samples.size()) + got * info.channels <= kMaxSamples,
              "{}: the audio file has more than {} samples", name, kMaxSamples);
    a.samples.insert(a.samples.end(), chunk.begin(), chunk.begin() + got * info.channels);
  }
  const int err = sf_error(f.get());
  MEL_CHECK(err == SF_ERR_NO_ERROR, "{}: cannot read the audio data: {}", name,
            sf_error_number(err));
  MEL_CHECK(!a.samples.empty(), "{}: the audio file has no samples (an empty data chunk)", name);
  // A FLAC or Ogg file cut short decodes up to the cut without an error; its header's frame
  // count shows it. (Not for MP3: without a Xing/LAME header mpg123 only estimates the length.)
  const bool exact_length = (info.format & SF_FORMAT_TYPEMASK) != SF_FORMAT_MPEG;
  MEL_CHECK(
      !exact_length || info.frames <= 0 || info.frames == SF_COUNT_MAX || a.frames() >= info.frames,
      "{}: truncated audio file: {} frames read of the {} its header announces", name, a.frames(),
      static_cast<int64_t>(info.frames));
  for (size_t i = 0; i < a.samples.size(); ++i) {
    float& v = a.samples[i];
    MEL_CHECK(std::isfinite(v), "{}: sample {} of channel {} is {} (a corrupt float file)", name,
              i / static_cast<size_t>(a.channels), i % static_cast<size_t>(a.channels), v);
    v = std::clamp(v, -1.0f, 1.0f);
  }
  return a;
}

}  // namespace

int64_t Audio::frames() const {
  return channels > 0 ? static_cast<int64_t>(samples.size()) / channels : 0;
}

Audio read_audio(const std::string& path) {
  SF_INFO info{};
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
  MEL_CHECK(f, "{}: cannot read audio: {}", path, sf_strerror(nullptr));
  return decode(f, info, path);
}

Audio read_audio_memory(const void* data, size_t size, const std::string& name) {
  MEL_CHECK(size > 0, "{}: cannot read audio: an empty file", name);
  SF_VIRTUAL_IO io{mem_length, mem_seek, mem_read, mem_write, mem_tell};
  MemoryFile m{static_cast<const unsigned char*>(data), static_cast<sf_count_t>(size), 0};
  SF_INFO info{};
  SNDFILE* f = sf_open_virtual(&io, SFM_READ, &info, &m);
  MEL_CHECK(f, "{}: cannot read audio: {}", name, sf_strerror(nullptr));
  return decode(f, info, name);
}

std::vector<float> read_clip(const std::string& path, int64_t sample_rate, int64_t length) {
  MEL_CHECK(sample_rate > 0 && length > 0,
            "read_clip: the expected sample rate ({}) and length ({}) must be positive",
            sample_rate, length);
  Audio a = read_audio(path);
  MEL_CHECK(a.sample_rate == sample_rate,
            "{}: sample rate {} Hz, expected {} Hz (clips are not resampled: convert the file)",
            path, a.sample_rate, sample_rate);
  MEL_CHECK(a.channels == 1,
            "{}: {} channels, expected mono (1 channel; clips are not mixed down: convert the "
            "file)",
            path, a.channels);
  const int64_t n = a.frames();
  MEL_CHECK(n <= length,
            "{}: {} samples ({:.3f} s), longer than the expected {} samples ({:.3f} s at {} Hz)",
            path, n, static_cast<double>(n) / sample_rate, length,
            static_cast<double>(length) / sample_rate, sample_rate);
  float peak = 0;
  for (const float v : a.samples) peak = std::max(peak, std::abs(v));
  MEL_CHECK(peak >= kSilencePeak,
            "{}: silence-only clip (peak |x| {:.3g} is below {:g}, about -80 dBFS); expected "
            "speech or background noise",
            path, peak, kSilencePeak);
  a.samples.resize(static_cast<size_t>(length), 0.0f);
  return std::move(a.samples);
}

void write_wav(const std::string& path, const Audio& a) {
  MEL_CHECK(a.channels >= 1 && a.channels <= 1024, "write_wav: {}: {} channels (1 to 1024)", path,
            a.channels);
  MEL_CHECK(a.sample_rate >= 1 && a.sample_rate <= 0x7fffffff,
            "write_wav: {}: sample rate {} Hz (must be positive)", path, a.sample_rate);
  MEL_CHECK(a.samples.size() % static_cast<size_t>(a.channels) == 0,
            "write_wav: {}: {} samples is not a whole number of {}-channel frames", path,
            a.samples.size(), a.channels);
  SF_INFO info{};
  info.samplerate = static_cast<int>(a.sample_rate);
  info.channels = static_cast<int>(a.channels);
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  File f(sf_open(path.c_str(), SFM_WRITE, &info));
  MEL_CHECK(f, "write_wav: {}: cannot write: {}", path, sf_strerror(nullptr));
  // Out-of-range values clip instead of wrapping around.
  sf_command(f.get(), SFC_SET_CLIPPING, nullptr, SF_TRUE);
  const sf_count_t frames = a.frames();
  const sf_count_t wrote = sf_writef_float(f.get(), a.samples.data(), frames);
  MEL_CHECK(wrote == frames, "write_wav: {}: wrote {} of {} frames: {}", path,
            static_cast<int64_t>(wrote), static_cast<int64_t>(frames), sf_strerror(f.get()));
  const int rc = sf_close(f.release());
  MEL_CHECK(rc == 0, "write_wav: {}: closing the file failed: {}", path, sf_error_number(rc));
}

}  // namespace mel::data
