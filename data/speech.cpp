#include "data/speech.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/json_reader.h"
#include "data/audio.h"
#include "data/io.h"
#include "data/npy.h"

namespace mel::data {

namespace fs = std::filesystem;

namespace {

constexpr const char* kCacheVersion = "mel-spoken-words-features-1";

struct Clip {
  std::string path;  // full path
  std::string rel;   // relative to the dataset folder
  int64_t label = 0;
  std::string speaker;
  uint64_t size = 0;
  int64_t mtime = 0;
};

uint64_t fnv1a(uint64_t h, const std::string& s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  h ^= 0xff;  // field separator
  h *= 0x100000001b3ull;
  return h;
}

std::string options_text(const SpeechOptions& o) {
  const LogMelOptions& f = o.features;
  return fmt::format(
      "sr={} n_fft={} win={} hop={} mels={} fmin={:.17g} fmax={:.17g} off={:.17g} "
      "window={} clip={}",
      f.sample_rate, f.n_fft, f.win_length, f.hop_length, f.n_mels, f.f_min, f.f_max, f.log_offset,
      f.window, o.clip_samples);
}

std::vector<Clip> list_clips(const std::string& dir, const std::string& split_dir,
                             const std::vector<std::string>& classes) {
  std::vector<Clip> clips;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(split_dir, ec)) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    MEL_CHECK(std::find(classes.begin(), classes.end(), name) != classes.end(),
              "spoken words: {} is not a class folder (expected only: {}{})", entry.path().string(),
              fmt::join(classes, ", "),
              closest_match(name, classes).empty()
                  ? ""
                  : fmt::format("; did you mean '{}'?", closest_match(name, classes)));
  }
  MEL_CHECK(!ec, "spoken words: cannot list {}: {}", split_dir, ec.message());
  for (size_t c = 0; c < classes.size(); ++c) {
    const fs::path folder = fs::path(split_dir) / classes[c];
    MEL_CHECK(fs::is_directory(folder),
              "spoken words: class '{}' has no folder {} (expected one folder of .wav clips per "
              "class)",
              classes[c], folder.string());
    std::vector<Clip> here;
    for (const auto& entry : fs::directory_iterator(folder)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || entry.path().extension() != ".wav") continue;
      Clip clip;
      clip.path = entry.path().string();
      clip.rel = fs::relative(entry.path(), dir).string();
      clip.label = static_cast<int64_t>(c);
      clip.speaker = name.substr(0, std::min(name.find('_'), name.size() - 4));
      clip.size = static_cast<uint64_t>(entry.file_size());
      clip.mtime = static_cast<int64_t>(entry.last_write_time().time_since_epoch().count());
      here.push_back(std::move(clip));
    }
    MEL_CHECK(!here.empty(),
              "spoken words: class '{}' has no clips in {} (expected at least one .wav file)",
              classes[c], folder.string());
    std::sort(here.begin(), here.end(), [](const Clip& a, const Clip& b) { return a.rel < b.rel; });
    for (auto& clip : here) clips.push_back(std::move(clip));
  }
  return clips;
}

}  // namespace

// Features of every clip, [N, 1, n_mels, frames], computed on all cores.
Tensor clip_features(const std::vector<std::string>& paths, const SpeechOptions& o) {
  const LogMel logmel(o.features);
  const int64_t frames = logmel.frames(o.clip_samples);
  const int64_t n = static_cast<int64_t>(paths.size()), per = o.features.n_mels * frames;
  Tensor out = empty({n, 1, o.features.n_mels, frames}, DType::f32);
  float* dst = out.data<float>();
  const int64_t workers =
      std::clamp<int64_t>(static_cast<int64_t>(std::thread::hardware_concurrency()), 1, 16);
  std::mutex mu;
  std::exception_ptr error;
  int64_t first_bad = n;
  std::vector<std::thread> threads;
  for (int64_t w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      for (int64_t i = w; i < n; i += workers) {
        try {
          const std::vector<float> x =
              read_clip(paths[static_cast<size_t>(i)], o.features.sample_rate, o.clip_samples);
          logmel.compute(x.data(), o.clip_samples, dst + i * per);
        } catch (...) {
          std::lock_guard<std::mutex> lk(mu);
          if (i < first_bad) {  // report the first bad file in listing order
            first_bad = i;
            error = std::current_exception();
          }
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

namespace {

Tensor cached_features(const fs::path& file, const Shape& want) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return Tensor();
  try {
    Tensor t = load_npy(file.string());
    if (t.dtype() == DType::f32 && t.shape() == want) return t;
  } catch (const std::exception&) {
  }
  fmt::print(stderr, "spoken words: ignoring the damaged feature cache {}\n", file.string());
  return Tensor();
}

void write_cache(const fs::path& file, const Tensor& features) {
  std::error_code ec;
  fs::create_directories(file.parent_path(), ec);
  const fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    const std::string bytes = npy_bytes(features);
    if (f) f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (f) f.close();
    if (!f) {
      fs::remove(tmp, ec);
      fmt::print(stderr,
                 "spoken words: cannot write the feature cache {} (the features are "
                 "computed again next time)\n",
                 file.string());
      return;
    }
  }
  fs::rename(tmp, file, ec);
  if (ec) fs::remove(tmp, ec);
}

}  // namespace

std::string spoken_words_default_dir() {
  if (const char* home = std::getenv("MEL_DATA_HOME"); home && *home) {
    return (fs::path(home) / "spoken-words").string();
  }
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : ".") / ".local/share/mel/spoken-words").string();
}

std::vector<std::string> spoken_word_classes(const std::string& dir) {
  const fs::path meta = fs::path(dir) / "meta.json";
  if (fs::is_regular_file(meta)) {
    const std::vector<uint8_t> bytes = read_raw_file(meta.string());
    Json j;
    try {
      j = Json::parse(bytes.begin(), bytes.end());
    } catch (const std::exception& e) {
      fail("spoken words: {} is not valid JSON: {}", meta.string(), e.what());
    }
    if (j.contains("classes")) {
      const Json& c = j["classes"];
      MEL_CHECK(c.is_array() && !c.empty(),
                "spoken words: {}: 'classes' must be a non-empty array of folder names",
                meta.string());
      std::vector<std::string> out;
      for (const Json& v : c) {
        MEL_CHECK(v.is_string() && !v.get<std::string>().empty() &&
                      v.get<std::string>().find('/') == std::string::npos,
                  "spoken words: {}: 'classes' must hold folder names, got {}", meta.string(),
                  v.dump());
        out.push_back(v.get<std::string>());
      }
      return out;
    }
  }
  return {"yes", "no",  "up",   "down", "left",      "right",
          "on",  "off", "stop", "go",   "_unknown_", "_silence_"};
}

ImageDataset load_spoken_words(const std::string& dir, Split split, const SpeechOptions& o) {
  validate(o.features);
  MEL_CHECK(o.clip_samples >= o.features.win_length,
            "spoken words: clips of {} samples are shorter than one analysis window ({} samples)",
            o.clip_samples, o.features.win_length);
  MEL_CHECK(fs::is_directory(dir),
            "spoken words: the folder {} does not exist (make the data with "
            "scripts/make_spoken_words.sh, or pass its folder with --data)",
            dir);
  const std::string split_dir = (fs::path(dir) / split_name(split)).string();
  MEL_CHECK(fs::is_directory(split_dir),
            "spoken words: {} is missing (expected the folders train, validation and test of "
            "scripts/make_spoken_words.sh)",
            split_dir);
  const std::vector<std::string> classes = spoken_word_classes(dir);
  const std::vector<Clip> clips = list_clips(dir, split_dir, classes);
  const int64_t n = static_cast<int64_t>(clips.size());

  ImageDataset ds;
  ds.name = kSpokenWordsName;
  ds.num_classes = static_cast<int64_t>(classes.size());
  ds.class_names = classes;
  ds.labels = empty({n}, DType::i64);
  for (int64_t i = 0; i < n; ++i) {
    ds.labels.data<int64_t>()[i] = clips[static_cast<size_t>(i)].label;
    ds.speakers.push_back(clips[static_cast<size_t>(i)].speaker);
  }

  const LogMel probe(o.features);
  const Shape want{n, 1, o.features.n_mels, probe.frames(o.clip_samples)};
  uint64_t key = 0xcbf29ce484222325ull;
  key = fnv1a(key, kCacheVersion);
  key = fnv1a(key, options_text(o));
  for (const Clip& c : clips) {
    key = fnv1a(key, fmt::format("{}|{}|{}|{}", c.rel, c.label, c.size, c.mtime));
  }
  const fs::path cache =
      fs::path(dir) / ".cache" / fmt::format("{}-{:016x}.npy", split_name(split), key);
  if (o.cache) ds.images = cached_features(cache, want);
  if (!ds.images.defined()) {
    std::vector<std::string> paths;
    for (const Clip& c : clips) paths.push_back(c.path);
    ds.images = clip_features(paths, o);
    if (o.cache) write_cache(cache, ds.images);
  }
  return ds;
}

}  // namespace mel::data
