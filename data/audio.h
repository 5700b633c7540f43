// Audio files through libsndfile: WAV (8-bit unsigned, 16/24/32-bit PCM, float, double) and every
// other format the installed libsndfile reads (FLAC, Ogg, AIFF, ...), as interleaved float
// samples in [-1, 1]; read_clip adds the checks a dataset of fixed-length mono clips needs.
// Errors are mel::Error naming the file, what is wrong and libsndfile's own message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mel::data {

struct Audio {
  int64_t sample_rate = 0;
  int64_t channels = 0;
  std::vector<float> samples;  // interleaved, in [-1, 1]
  int64_t frames() const;      // samples.size() / channels
};

// Any format libsndfile reads. Integer samples are scaled to [-1, 1) (divided by 2^(bits-1));
// float files are returned as stored, clipped to [-1, 1]; a NaN or infinite sample is an error. A
// missing, empty or non-audio file, one with no frames, and a truncated one are errors. libsndfile
// itself reads a truncated file up to the cut without complaint; it is caught here from
// libsndfile's log (a WAV or AIFF data chunk longer than the bytes present) or from the header's
// frame count (FLAC, Ogg and the rest; not MP3, whose length may be an estimate, nor W64 or RF64).
Audio read_audio(const std::string& path);
// The same from bytes in memory (libsndfile's virtual I/O); `name` names them in errors.
Audio read_audio_memory(const void* data, size_t size, const std::string& name);

// One mono clip of exactly `length` samples at `sample_rate`. A wrong sample rate or a channel
// count other than 1 is an error (nothing is resampled or mixed down); a clip longer than `length`
// is an error, a shorter one is zero-padded at the end; a clip whose peak |x| is below
// kSilencePeak (digital silence) is an error.
std::vector<float> read_clip(const std::string& path, int64_t sample_rate, int64_t length);
inline constexpr double kSilencePeak = 1e-4;  // about -80 dBFS

// Writes a 16-bit PCM WAV file (values beyond [-1, 1] are clipped).
void write_wav(const std::string& path, const Audio& a);

}  // namespace mel::data
