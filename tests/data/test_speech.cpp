// Spoken-word datasets on small synthetic clip folders: layout, labels, speakers, the feature
// cache, errors naming the file; f32 features through the DataLoader with SpecAugment masks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "core/error.h"
#include "data/audio.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/npy.h"
#include "data/speech.h"
#include "data/transforms.h"
#include "tests/temp_dir.h"

namespace mel::data {
namespace {

namespace fs = std::filesystem;
using ::mel::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A tone of `hz` (noise when hz is 0) of `n` samples at 16 kHz.
Audio tone(double hz, int64_t n, uint64_t seed, int64_t rate = 16000) {
  Audio a;
  a.sample_rate = rate;
  a.channels = 1;
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const double noise = (static_cast<double>(s >> 11) / 9007199254740992.0 - 0.5) * 0.02;
    a.samples.push_back(
        static_cast<float>((hz > 0 ? 0.5 * std::sin(2 * M_PI * hz * i / rate) : 0.0) + noise));
  }
  return a;
}

const std::vector<std::string> kClasses = {"yes", "no", "_silence_"};

// DIR/<split>/<class>/<voice>_<k>.wav with two clips per voice and class; voices differ per split.
void make_set(const std::string& dir) {
  std::ofstream(dir + "/meta.json") << R"({"classes": ["yes", "no", "_silence_"]})";
  const std::vector<std::pair<std::string, std::vector<std::string>>> splits = {
      {"train", {"adam", "f1", "m3"}}, {"validation", {"klatt"}}, {"test", {"whisper"}}};
  uint64_t seed = 0;
  for (const auto& [split, voices] : splits) {
    for (size_t c = 0; c < kClasses.size(); ++c) {
      const fs::path folder = fs::path(dir) / split / kClasses[c];
      fs::create_directories(folder);
      for (const auto& v : voices) {
        for (int k = 0; k < 2; ++k) {
          write_wav((folder / (v + "_en-us_" + std::to_string(k) + ".wav")).string(),
                    tone(c == 2 ? 0.0 : 300.0 + 900.0 * static_cast<double>(c), 16000, ++seed));
        }
      }
    }
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(SpokenWords, LoadsFeaturesLabelsAndSpeakers) {
  TempDir dir("speech");
  make_set(dir.path.string());
  const ImageDataset tr = load_dataset("spoken-words", dir.path.string(), Split::train);
  ASSERT_EQ(tr.size(), 3 * 3 * 2);
  EXPECT_EQ(tr.images.dtype(), DType::f32);
  EXPECT_EQ(tr.images.shape(), (Shape{18, 1, 40, 98}));
  EXPECT_EQ(tr.class_names, kClasses);
  EXPECT_EQ(tr.num_classes, 3);
  // Sorted by class, then file name: labels 0 x6, 1 x6, 2 x6; speakers from the file names.
  for (int64_t i = 0; i < 18; ++i) EXPECT_EQ(tr.labels.data<int64_t>()[i], i / 6);
  EXPECT_EQ(tr.speakers[0], "adam");
  EXPECT_EQ(tr.speakers[2], "f1");
  EXPECT_EQ(tr.speakers[5], "m3");
  // The features are the front end's on the clip.
  const LogMel lm(LogMelOptions{});
  std::vector<float> want(40 * 98);
  const std::vector<float> clip = read_clip(dir / "train/no/f1_en-us_1.wav", 16000, 16000);
  lm.compute(clip.data(), 16000, want.data());
  const float* got = tr.images.data<float>() + 9 * 40 * 98;  // no: adam 0, 1, f1 0, 1 -> 9
  for (size_t k = 0; k < want.size(); ++k) ASSERT_EQ(got[k], want[k]) << k;
  // The 1200 Hz tone of "no" is loudest in a higher band than the 300 Hz tone of "yes".
  const auto peak_band = [&](int64_t sample) {
    const float* f = tr.images.data<float>() + sample * 40 * 98;
    int64_t best = 0;
    for (int64_t m = 0; m < 40; ++m) {
      if (f[m * 98 + 50] > f[best * 98 + 50]) best = m;
    }
    return best;
  };
  EXPECT_LT(peak_band(0), peak_band(6));

  const ImageDataset va = load_dataset("spoken-words", dir.path.string(), Split::validation);
  const ImageDataset te = load_dataset("spoken-words", dir.path.string(), Split::test);
  EXPECT_EQ(va.size(), 6);
  EXPECT_EQ(te.size(), 6);
  // No speaker in two splits.
  std::set<std::string> a(tr.speakers.begin(), tr.speakers.end()),
      b(va.speakers.begin(), va.speakers.end()), c(te.speakers.begin(), te.speakers.end());
  for (const auto& s : a) EXPECT_TRUE(!b.count(s) && !c.count(s)) << s;
  for (const auto& s : b) EXPECT_FALSE(c.count(s)) << s;
}

TEST(SpokenWords, FeatureCacheIsReusedAndFollowsTheFilesAndOptions) {
  TempDir dir("speech-cache");
  make_set(dir.path.string());
  const std::string d = dir.path.string();
  const ImageDataset first = load_dataset("spoken-words", d, Split::test);
  std::vector<fs::path> cached;
  for (const auto& e : fs::directory_iterator(dir / ".cache")) cached.push_back(e.path());
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_THAT(cached[0].filename().string(), HasSubstr("test-"));
  // A second load reads the cache: make the cached values recognisable to see that it does.
  {
    Tensor marked = first.images.clone();
    marked.data<float>()[0] = 12345.0f;
    std::ofstream(cached[0], std::ios::binary) << npy_bytes(marked);
  }
  EXPECT_EQ(load_dataset("spoken-words", d, Split::test).images.data<float>()[0], 12345.0f);
  // Other options: other features, another cache file.
  DatasetOptions o;
  o.speech.features.n_mels = 32;
  EXPECT_EQ(load_dataset("spoken-words", d, Split::test, o).images.size(2), 32);
  // A rewritten clip invalidates the cache (its size changes).
  write_wav(dir / "test/yes/whisper_en-us_0.wav", tone(500.0, 12000, 99));
  const ImageDataset again = load_dataset("spoken-words", d, Split::test);
  EXPECT_NE(again.images.data<float>()[0], 12345.0f);
  // A damaged cache file is ignored, not an error.
  for (const auto& e : fs::directory_iterator(dir / ".cache")) {
    std::ofstream(e.path(), std::ios::binary) << "not a npy file";
  }
  EXPECT_EQ(load_dataset("spoken-words", d, Split::test).size(), 6);
  // cache off: nothing read or written
  fs::remove_all(dir / ".cache");
  o = DatasetOptions{};
  o.speech.cache = false;
  load_dataset("spoken-words", d, Split::test, o);
  EXPECT_FALSE(fs::exists(dir / ".cache"));
}

TEST(SpokenWords, BadFoldersAndClipsAreErrorsNamingTheFile) {
  TempDir dir("speech-bad");
  const std::string d = dir.path.string();
  EXPECT_THAT(error_of([&] { load_dataset("spoken-words", d + "/nowhere", Split::train); }),
              HasSubstr("make_spoken_words.sh"));
  make_set(d);
  DatasetOptions nocache;
  nocache.speech.cache = false;
  // a class with no clips
  fs::remove_all(dir / "test/no");
  fs::create_directories(dir / "test/no");
  EXPECT_THAT(error_of([&] { load_dataset("spoken-words", d, Split::test, nocache); }),
              AllOf(HasSubstr("class 'no' has no clips"), HasSubstr("test/no")));
  fs::remove_all(dir / "test/no");
  EXPECT_THAT(error_of([&] { load_dataset("spoken-words", d, Split::test, nocache); }),
              HasSubstr("class 'no' has no folder"));
  fs::create_directories(dir / "test/no");
  write_wav(dir / "test/no/whisper_x_0.wav", tone(700.0, 16000, 3));
  // an unknown class folder
  fs::create_directories(dir / "test/yess");
  EXPECT_THAT(error_of([&] { load_dataset("spoken-words", d, Split::test, nocache); }),
              AllOf(HasSubstr("test/yess is not a class folder"), HasSubstr("did you mean 'yes'")));
  fs::remove_all(dir / "test/yess");
  // a clip at the wrong rate, a stereo clip, a silent one, one too long, not a WAV
  const std::string bad = dir / "test/yes/whisper_en-us_0.wav";
  write_wav(bad, tone(300.0, 8000, 4, 8000));
  EXPECT_THAT(error_of([&] { load_dataset("spoken-words", d, Split::test, nocache); }),
              AllOf(HasSubstr("whisper_en-us_0.wav"), HasSubstr("8000"), HasSubstr("16000")));
  Audio silent;
  silent.sample_rate = 16000;
  silent.channels = 1;
  silent.samples.assign(16000, 0.0f);
  write_wav(bad, silent);
  EXPECT_THAT(error_of([&] { load_dataset("spoken-words", d, Split::test, nocache); }),
              AllOf(HasSubstr("whisper_en-us_0.wav"), HasSubstr("silence")));
  write_wav(bad, tone(300.0, 20000, 5));
  EXPECT_THAT(error_of([&] { load_dataset("spoken-words", d, Split::test, nocache); }),
              HasSubstr("whisper_en-us_0.wav"));
  std::ofstream(bad, std::ios::binary) << "RIFF....WAVEnot really";
  EXPECT_THAT(error_of([&] { load_dataset("spoken-words", d, Split::test, nocache); }),
              HasSubstr("whisper_en-us_0.wav"));
  // image datasets have no validation split
  EXPECT_THAT(error_of([&] { load_dataset("mnist", d, Split::validation); }),
              HasSubstr("no validation split"));
  // bad meta.json
  std::ofstream(dir / "meta.json") << "{\"classes\": 3}";
  EXPECT_THAT(error_of([&] { load_dataset("spoken-words", d, Split::test, nocache); }),
              AllOf(HasSubstr("meta.json"), HasSubstr("classes")));
}

ImageDataset feature_set(int64_t n, int64_t F, int64_t T) {
  ImageDataset ds;
  ds.name = "features";
  ds.images = empty({n, 1, F, T}, DType::f32);
  for (int64_t i = 0; i < n * F * T; ++i) {
    ds.images.data<float>()[i] = static_cast<float>(i % 97) * 0.25f - 7.0f;
  }
  ds.labels = empty({n}, DType::i64);
  for (int64_t i = 0; i < n; ++i) ds.labels.data<int64_t>()[i] = i % 3;
  ds.num_classes = 3;
  return ds;
}

TEST(FeatureLoader, NormalisesLikeNormalizeImagesAndMasksDeterministically) {
  const ImageDataset ds = feature_set(10, 8, 20);
  LoaderOptions o;
  o.batch_size = 10;
  o.shuffle = false;
  o.prefetch = false;
  o.mean = {-2.0f};
  o.std = {3.0f};
  DataLoader plain(ds, o);
  Batch b;
  ASSERT_TRUE(plain.next(b));
  const Tensor want = normalize_images(ds.images, o.mean, o.std);
  for (int64_t k = 0; k < want.numel(); ++k) {
    ASSERT_EQ(b.x.data<float>()[k], want.data<float>()[k]);
  }
  EXPECT_FLOAT_EQ(want.data<float>()[1], (0.25f - 7.0f + 2.0f) / 3.0f);

  o.spec_augment = {2, 3, 2, 5};
  o.seed = 7;
  DataLoader masked(ds, o), again(ds, o);
  Batch m1, m2;
  ASSERT_TRUE(masked.next(m1));
  ASSERT_TRUE(again.next(m2));
  int64_t zeros = 0;
  for (int64_t i = 0; i < 10; ++i) {
    const auto masks = masked.masks_for(0, i);
    EXPECT_LE(masks.size(), 4u);
    std::vector<bool> hit(8 * 20, false);
    for (const Mask& mk : masks) {
      EXPECT_GE(mk.width, 1);
      EXPECT_LE(mk.width, mk.time ? 5 : 3);
      EXPECT_LE(mk.start + mk.width, mk.time ? 20 : 8);
      for (int64_t f = 0; f < 8; ++f) {
        for (int64_t t = 0; t < 20; ++t) {
          if (mk.time ? (t >= mk.start && t < mk.start + mk.width)
                      : (f >= mk.start && f < mk.start + mk.width)) {
            hit[static_cast<size_t>(f * 20 + t)] = true;
          }
        }
      }
    }
    for (int64_t k = 0; k < 160; ++k) {
      const float got = m1.x.data<float>()[i * 160 + k];
      EXPECT_EQ(got, hit[static_cast<size_t>(k)] ? 0.0f : want.data<float>()[i * 160 + k]);
      zeros += hit[static_cast<size_t>(k)];
    }
  }
  EXPECT_GT(zeros, 0);
  for (int64_t k = 0; k < m1.x.numel(); ++k)
    ASSERT_EQ(m1.x.data<float>()[k], m2.x.data<float>()[k]);
  // another epoch, other masks
  bool differ = false;
  for (int64_t i = 0; i < 10; ++i) {
    const auto a = masked.masks_for(0, i), c = masked.masks_for(1, i);
    differ |= a.size() != c.size() || (!a.empty() && a[0].start != c[0].start);
  }
  EXPECT_TRUE(differ);

  // Features take no crop or flip.
  o.crop_padding = 2;
  EXPECT_THAT(error_of([&] { DataLoader bad(ds, o); }), HasSubstr("no crop or flip"));
}

}  // namespace
}  // namespace mel::data
