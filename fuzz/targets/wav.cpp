// Fuzz target: audio file bytes (data/audio read_audio_memory, libsndfile through virtual I/O:
// WAV and every other format the installed libsndfile reads). What reads must be consistent: at
// least one channel, a positive sample rate, a whole number of frames, finite samples in [-1, 1].
// A clean mel::Error is the expected answer to a malformed file; anything else is a bug.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "data/audio.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mel::data::Audio a;
  try {
    a = mel::data::read_audio_memory(data, size, "fuzz.wav");
  } catch (const mel::Error&) {
    return 0;
  }
  if (a.channels < 1 || a.sample_rate < 1 || a.samples.empty() ||
      a.samples.size() != static_cast<size_t>(a.frames() * a.channels)) {
    __builtin_trap();
  }
  for (const float v : a.samples) {
    if (!std::isfinite(v) || v < -1.0f || v > 1.0f) __builtin_trap();
  }
  return 0;
}
