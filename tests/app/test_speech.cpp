// Spoken words end to end: the speech configs' sizes, scripts/make_spoken_words.sh (layout, split
// by voice, the same bytes for any --jobs), and a short MEL run on a small synthesized set that
// learns well above chance and reports its failure table.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "app/ensemble_run.h"
#include "app/single.h"
#include "data/dataset.h"
#include "data/speech.h"
#include "tests/app/app_testing.h"

namespace mel::app {
namespace {

using namespace testing;

bool have_speech_tools() {
  return std::system("command -v espeak-ng > /dev/null && command -v sox > /dev/null") == 0;
}

// Runs the data script; returns its exit status.
int make_words(const std::string& out, const std::string& args) {
  const std::string cmd = source_path("scripts/make_spoken_words.sh") + " --out " + out + " " +
                          args + " > " + out + ".log 2>&1";
  return std::system(cmd.c_str());
}

// Every file under `dir` (relative path -> bytes).
std::map<std::string, std::string> tree(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_file(e.path());
  }
  return out;
}

TEST(SpeechConfigs, SizesAndTheFrontEndStoredWithTheRun) {
  SingleConfig o = load_single_config(source_path("configs/speech_original.json"), RunOverrides{});
  EXPECT_EQ(build_model(o)->num_parameters(), 391404);
  // the front end as trained, spelled out in the stored config
  EXPECT_EQ(o.json["data"]["features"]["n_mels"], 40);
  EXPECT_EQ(o.json["data"]["features"]["hop_length"], 160);
  EXPECT_EQ(o.json["data"]["features"]["window"], "hann");
  EXPECT_EQ(o.data.spec_augment.time_masks, 2);
  for (auto [file, total] : {std::pair{"configs/speech_mel2.json", 160932},
                             std::pair{"configs/speech_mel3.json", 154920}}) {
    MelConfig c =
        parse_mel_config(read_json_file(source_path(file)), source_path(file), RunOverrides{});
    auto m = build_ensemble_model(c);
    EXPECT_EQ(m->num_parameters(), total) << file;
    EXPECT_EQ(c.original_params, 391404);
    const double share = static_cast<double>(total) / 391404.0;
    EXPECT_GT(share, 0.38) << file;  // "about 40% of the original"
    EXPECT_LT(share, 0.42) << file;
  }
  // bad front-end and masking settings name the field
  const auto error_with = [](const std::string& pointer, const Json& value) {
    Json bad = read_json_file(source_path("configs/speech_original.json"));
    bad[Json::json_pointer(pointer)] = value;
    try {
      parse_single_config(bad, "bad.json", RunOverrides{});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  std::string err = error_with("/data/features/win_length", 1024);
  EXPECT_NE(err.find("data.features"), std::string::npos) << err;
  EXPECT_NE(err.find("win_length"), std::string::npos) << err;
  err = error_with("/data/features/n_mels", 0);
  EXPECT_NE(err.find("n_mels"), std::string::npos) << err;
  err = error_with("/data/spec_augment/time_width", -1);
  EXPECT_NE(err.find("data.spec_augment.time_width"), std::string::npos) << err;
  err = error_with("/data/hflip", true);
  EXPECT_NE(err.find("no crop or flip"), std::string::npos) << err;
}

TEST(SpokenWordsScript, SplitsByVoiceAndGivesTheSameBytesForAnyJobs) {
  if (!have_speech_tools()) GTEST_SKIP() << "espeak-ng or sox not installed (scripts/setup.sh)";
  TempDir d;
  ASSERT_EQ(make_words(d / "a", "--voices 4 --per-word 1 --seed 3 --jobs 1"), 0)
      << read_file(d / "a.log");
  ASSERT_EQ(make_words(d / "b", "--voices 4 --per-word 1 --seed 3 --jobs 3"), 0)
      << read_file(d / "b.log");
  const auto a = tree(d / "a"), b = tree(d / "b");
  EXPECT_EQ(a.size(), 4u * 12 + 2);  // the clips, manifest.tsv and meta.json
  EXPECT_TRUE(a == b) << "the same seed and options gave different files";
  // every clip is a mono 16 kHz second, the manifest lists them all, and no voice is in two splits
  std::map<std::string, std::string> split_of;
  size_t clips = 0;
  for (data::Split s : {data::Split::train, data::Split::validation, data::Split::test}) {
    const data::ImageDataset ds = data::load_dataset("spoken-words", d / "a", s);
    EXPECT_GE(ds.size(), 12);
    clips += static_cast<size_t>(ds.size());
    for (const auto& v : ds.speakers) {
      auto [it, fresh] = split_of.emplace(v, data::split_name(s));
      EXPECT_TRUE(fresh || it->second == data::split_name(s)) << v << " is in two splits";
    }
  }
  EXPECT_EQ(clips, 4u * 12);
  EXPECT_EQ(split_of.size(), 4u);
  const std::string manifest = read_file(d / "a/manifest.tsv");
  EXPECT_EQ(std::count(manifest.begin(), manifest.end(), '\n'), 4 * 12 + 1);
  // the same options again: nothing to do; other options over it: refused without --force
  EXPECT_EQ(make_words(d / "a", "--voices 4 --per-word 1 --seed 3"), 0);
  EXPECT_NE(make_words(d / "a", "--voices 4 --per-word 1 --seed 4"), 0);
  EXPECT_NE(read_file(d / "a.log").find("--force"), std::string::npos) << read_file(d / "a.log");
}

TEST(SpeechTraining, MelLearnsWellAboveChanceAndReportsFailures) {
  if (!have_speech_tools()) GTEST_SKIP() << "espeak-ng or sox not installed (scripts/setup.sh)";
  TempDir d;
  ASSERT_EQ(make_words(d / "words", "--voices 20 --per-word 3 --seed 1"), 0)
      << read_file(d / "words.log");
  RunOverrides ov;
  ov.out = d / "run";
  ov.progress = false;
  ov.data_dir = d / "words";
  ov.epochs = 10;
  ov.batch_size = 16;
  MelConfig c = parse_mel_config(read_json_file(source_path("configs/speech_mel2.json")),
                                 source_path("configs/speech_mel2.json"), ov);
  const Json r = train_mel(c, ov, "");
  // 12 classes: chance is 8.3%; every exit and the head do far better (55-61% here, on 504
  // clips of 14 voices, tested on 3 voices never heard)
  for (const char* k : {"1", "2", "1+2"}) {
    EXPECT_GT(r["accuracy"][k].get<double>(), 0.4) << k << ": " << r["accuracy"].dump();
  }
  ASSERT_EQ(r["failures"].size(), 8u);
  EXPECT_EQ(r["failures"][0]["answer"], "1+2");
  EXPECT_EQ(r["failures"][3]["answered_by"], "exits 1,2 (averaged)");
  EXPECT_GT(r["failures"][3]["accuracy"].get<double>(), 0.4);
  EXPECT_TRUE(r.contains("preserved_mean") && r.contains("preserved_worst"));
  EXPECT_TRUE(fs::exists(ov.out + "/failures.svg"));
  // eval from the run folder recomputes (or reads cached) features with the stored front end
  EXPECT_EQ(run_mel({"eval", ov.out}), 0);
  const Json v = eval_mel(c, ov.out + "/model.safetensors", [&] {
    RunOverrides e = ov;
    e.eval_split = data::Split::validation;
    return e;
  }());
  EXPECT_EQ(v["split"], "validation");
  EXPECT_GT(v["test_samples"].get<int64_t>(), 0);
  EXPECT_GT(v["accuracy"]["1+2"].get<double>(), 0.3);
  EXPECT_EQ(run_mel({"eval", ov.out, "--split", "validation"}), 0);
  // predict on WAV clips: a folder of them, through the run's own front end
  ASSERT_EQ(run_mel({"predict", ov.out, "--input", d / "words/test/yes", "--out", d / "pred"}), 0);
  const Json p = Json::parse(read_file(d / "pred/predictions.json"));
  size_t clips = 0;
  for (const auto& e : fs::directory_iterator(d / "words/test/yes")) clips += e.is_regular_file();
  EXPECT_EQ(p["samples"].get<size_t>(), clips);
  ASSERT_EQ(p["inputs"].size(), clips);
  EXPECT_NE(p["inputs"][0].get<std::string>().find("/test/yes/"), std::string::npos);
  std::string err;
  EXPECT_EQ(run_mel({"predict", ov.out, "--input", "/etc/hostname", "--out", d / "p2"}, &err), 1);
  EXPECT_NE(err.find("/etc/hostname: cannot read audio"), std::string::npos) << err;
}

}  // namespace
}  // namespace mel::app
