// Text end to end: the text configs' sizes, a short run of a small GPT whose validation loss falls
// well below the corpus's unigram entropy, an ensemble's text metrics and failure table, eval,
// resume, `mel sample`, and the bad inputs of the text path (corpus, context, prompt).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>

#include "app/ensemble_run.h"
#include "app/single.h"
#include "app/text_run.h"
#include "core/safetensors.h"
#include "data/text.h"
#include "tests/app/app_testing.h"

namespace mel::app {
namespace {

using namespace testing;

bool have_fortunes() {
  return fs::exists("/usr/share/games/fortunes/fortunes");
}

// The corpus written by scripts/make_text_corpus.sh from Debian's fortunes into `out`.
int make_corpus(const std::string& out) {
  const std::string cmd =
      source_path("scripts/make_text_corpus.sh") + " --out " + out + " > " + out + ".log 2>&1";
  return std::system(cmd.c_str());
}

// A small corpus with structure a tiny model learns in a few dozen steps: sentences made of a
// few words in a fixed grammar, one document each.
void write_toy_corpus(const std::string& dir, int documents = 400) {
  fs::create_directories(dir);
  const char* subjects[] = {"the cat", "a dog", "my bird", "the fox"};
  const char* verbs[] = {"sees", "likes", "chases", "finds"};
  const char* objects[] = {"the mat.", "a ball.", "the sun.", "my hat."};
  std::ofstream f(dir + "/toy.txt");
  uint64_t s = 1;
  auto next = [&s] {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>(s >> 61) & 3;
  };
  for (int d = 0; d < documents; ++d) {
    for (int line = 0; line < 3; ++line) {
      f << subjects[next()] << " " << verbs[next()] << " " << objects[next()] << " #" << d << "\n";
    }
    f << "%\n";
  }
}

// A GPT of `layers` blocks of `dim` wide (heads 2), context `T`, tied head.
Json tiny_gpt(int64_t dim, int64_t layers, int64_t T) {
  return Json::array({Json{{"type", "token_embedding"}, {"vocab", "data"}, {"dim", dim}},
                      Json{{"type", "position_embedding"}, {"context", T}},
                      Json{{"type", "transformer"}, {"layers", layers}, {"heads", 2}},
                      Json{{"type", "rows"}}});
}
Json lm_exit() {
  return Json::array(
      {Json{{"type", "layernorm"}}, Json{{"type", "lm_head"}, {"vocab", "data"}, {"tied", true}}});
}
Json text_train(int64_t epochs, int64_t batch) {
  return {{"epochs", epochs},
          {"batch_size", batch},
          {"eval_batch_size", 32},
          {"seed", 0},
          {"clip_grad_norm", 1.0},
          {"optimizer",
           {{"type", "adamw"},
            {"lr", 0.003},
            {"weight_decay", 0.1},
            {"exclude_from_decay", "norms_and_biases"}}},
          {"schedule", {{"type", "cosine"}, {"warmup_epochs", 0.2}, {"min_lr", 0.0003}}}};
}
Json single_config(const std::string& dir, int64_t batches, int64_t epochs, int64_t T = 32) {
  return {{"name", "tiny_text"},
          {"kind", "single"},
          {"data",
           {{"dataset", "text"},
            {"dir", dir},
            {"text", {{"validation_fraction", 0.1}, {"batches_per_epoch", batches}}}}},
          {"model", {{"input", {T}}, {"trunk", tiny_gpt(48, 2, T)}, {"head", lm_exit()}}},
          {"train", text_train(epochs, 16)}};
}
Json mel_config(const std::string& dir, int64_t batches, int64_t epochs, int64_t T = 32) {
  return {{"name", "tiny_text_mel"},
          {"kind", "mel"},
          {"data",
           {{"dataset", "text"},
            {"dir", dir},
            {"text", {{"validation_fraction", 0.1}, {"batches_per_epoch", batches}}}}},
          {"ensemble",
           {{"models", 2},
            {"upstream", {{"input", {T}}, {"backbone", tiny_gpt(32, 1, T)}, {"exit", lm_exit()}}},
            {"heads", {{"type", "linear"}, {"subsets", "all"}, {"norm", true}}}}},
          {"train", text_train(epochs, 16)}};
}

// The unigram entropy (nats per character) of a token stream: what a model that ignores the
// context can reach at best.
double unigram_entropy(const std::vector<int64_t>& tokens) {
  std::map<int64_t, double> count;
  for (int64_t t : tokens) count[t] += 1.0;
  double h = 0.0;
  for (const auto& [t, c] : count) {
    const double p = c / static_cast<double>(tokens.size());
    h -= p * std::log(p);
  }
  return h;
}

TEST(TextConfigs, EnsemblesHoldAboutFortyPercentOfTheOriginal) {
  if (!have_fortunes()) GTEST_SKIP() << "the fortunes package is not installed (scripts/setup.sh)";
  TempDir d;
  ASSERT_EQ(make_corpus(d / "corpus"), 0) << read_file(d / "corpus.log");
  RunOverrides ov;
  ov.data_dir = d / "corpus";
  const SingleConfig o = parse_single_config(
      read_json_file(source_path("configs/text_original.json")), "text_original.json", ov);
  const int64_t original = build_model(o)->num_parameters();
  EXPECT_GT(original, 4'000'000);  // a GPT of a few million parameters
  const int64_t vocab = o.data.num_classes();
  EXPECT_GT(vocab, 90);
  // The vocabulary is stored with the config, and every "vocab": "data" became its size.
  EXPECT_EQ(o.json["data"]["text"]["vocabulary"].get<std::string>(), o.data.text.vocabulary);
  EXPECT_EQ(o.json["model"]["trunk"][0]["vocab"].get<int64_t>(), vocab);
  for (const char* name : {"text_mel2", "text_mel3"}) {
    const std::string path = source_path(fmt::format("configs/{}.json", name));
    const MelConfig c = parse_mel_config(read_json_file(path), path, ov);
    EXPECT_EQ(c.original_params, original) << name;
    const double fraction = static_cast<double>(build_ensemble_model(c)->num_parameters()) /
                            static_cast<double>(original);
    EXPECT_GT(fraction, 0.35) << name;
    EXPECT_LT(fraction, 0.45) << name;
  }
}

TEST(TextTraining, LossFallsWellBelowTheUnigramEntropyOfTheCorpus) {
  if (!have_fortunes()) GTEST_SKIP() << "the fortunes package is not installed (scripts/setup.sh)";
  TempDir d;
  ASSERT_EQ(make_corpus(d / "corpus"), 0) << read_file(d / "corpus.log");
  RunOverrides ov;
  ov.out = d / "run";
  ov.progress = false;
  ov.test_limit = 200;  // 200 validation windows of 32 characters
  const std::string cfg = write_json(d, single_config(d / "corpus", 150, 2));
  const Json r = train_single(load_single_config(cfg, ov), ov, "");
  const data::TextData td = data::load_text_data(d / "corpus", {});
  const double unigram = unigram_entropy(td.train);
  const double loss = r["text"]["nats_per_char"]["1"].get<double>();
  // Unigram: about 3.2 nats per character; 300 steps of a 2-layer GPT reach about 2.6.
  EXPECT_LT(loss, unigram - 0.5) << "unigram " << unigram;
  EXPECT_NEAR(r["text"]["bits_per_char"]["1"].get<double>(), loss / std::log(2.0), 1e-9);
  EXPECT_GT(r["text"]["next_char_accuracy"]["1"].get<double>(), 0.25);
  EXPECT_EQ(r["text"]["characters"].get<int64_t>(), 200 * 32);
}

TEST(TextTraining, EnsembleReportsTextMetricsAndItsFailureTable) {
  TempDir d;
  write_toy_corpus(d / "toy");
  RunOverrides ov;
  ov.out = d / "run";
  ov.progress = false;
  const std::string cfg = write_json(d, mel_config(d / "toy", 40, 2));
  MelConfig c = parse_mel_config(read_json_file(cfg), cfg, ov);
  const Json r = train_mel(c, ov, "");
  const data::TextData td = data::load_text_data(d / "toy", {});
  const double unigram = unigram_entropy(td.train);
  const Json& t = r["text"];
  for (const char* k : {"1", "2", "1+2"}) {
    EXPECT_LT(t["nats_per_char"][k].get<double>(), unigram - 0.5) << k << " " << t.dump();
    EXPECT_GT(t["next_char_accuracy"][k].get<double>(), 0.3) << k;
    EXPECT_DOUBLE_EQ(r["accuracy"][k].get<double>(), t["next_char_accuracy"][k].get<double>());
  }
  // The failure table on text metrics: preserved next-character accuracy, the loss beside it.
  ASSERT_EQ(r["failures"].size(), 8u);
  const Json& none = r["failures"][0];
  EXPECT_EQ(none["answer"], "1+2");
  EXPECT_DOUBLE_EQ(none["loss"].get<double>(), t["nats_per_char"]["1+2"].get<double>());
  EXPECT_DOUBLE_EQ(r["no_failure_loss"].get<double>(), none["loss"].get<double>());
  const Json& one = r["failures"][1];  // server 1 failed: exit 2 answers
  EXPECT_EQ(one["answer"], "2");
  EXPECT_DOUBLE_EQ(one["loss"].get<double>(), t["nats_per_char"]["2"].get<double>());
  EXPECT_DOUBLE_EQ(one["preserved"].get<double>(),
                   t["next_char_accuracy"]["2"].get<double>() / none["accuracy"].get<double>());
  const Json& c_down = r["failures"][3];  // C failed: the client averages both exits
  EXPECT_EQ(c_down["answered_by"], "exits 1,2 (averaged)");
  EXPECT_LT(c_down["loss"].get<double>(), unigram);
  EXPECT_FALSE(r["failures"][4].contains("loss"));  // both upstreams down: nothing answers

  // eval recomputes the same numbers from the run folder (the vocabulary comes with it).
  const Json v = eval_mel(c, ov.out + "/model.safetensors", ov);
  EXPECT_EQ(v["split"], "validation");
  for (const char* k : {"1", "2", "1+2"}) {
    EXPECT_NEAR(v["text"]["nats_per_char"][k].get<double>(), t["nats_per_char"][k].get<double>(),
                1e-9)
        << k;
  }
  EXPECT_EQ(run_mel({"eval", ov.out}), 0);

  // Sampling: any exit or head, the same text for the same seed, only vocabulary characters.
  SampleOptions so;
  so.prompt = "the cat";
  so.length = 60;
  so.seed = 3;
  const SampleResult a = sample_text(ov.out, so, "cpu");
  EXPECT_EQ(a.predictor, "1+2");
  EXPECT_EQ(a.text.size(), 60u);
  EXPECT_EQ(sample_text(ov.out, so, "cpu").text, a.text);
  EXPECT_TRUE(td.vocab.missing(a.text).empty());
  so.predictor = "2";
  so.temperature = 0.0;
  EXPECT_EQ(sample_text(ov.out, so, "cpu").predictor, "2");
  // Longer than the context (32): the model reads the last 32 characters.
  so.length = 100;
  EXPECT_EQ(sample_text(ov.out, so, "cpu").text.size(), 100u);
  EXPECT_EQ(run_mel({"sample", ov.out, "--prompt", "a dog", "--length", "20"}), 0);

  std::string err;
  EXPECT_EQ(run_mel({"sample", ov.out, "--prompt", "the Zebra \xc3\xa9"}, &err), 1);
  EXPECT_NE(err.find("outside the vocabulary"), std::string::npos) << err;
  EXPECT_NE(err.find("'Z'"), std::string::npos) << err;
  EXPECT_NE(err.find("'\xc3\xa9'"), std::string::npos) << err;
  EXPECT_EQ(run_mel({"sample", ov.out, "--prompt", std::string(40, 'a')}, &err), 1);
  EXPECT_NE(err.find("the prompt has 40 characters, but the model reads at most 32"),
            std::string::npos)
      << err;
  EXPECT_EQ(run_mel({"sample", ov.out, "--predictor", "3"}, &err), 1);
  EXPECT_NE(err.find("unknown predictor '3'; this run has 1, 2, 1+2"), std::string::npos) << err;
}

TEST(TextTraining, ResumeEndsWithTheWeightsOfAnUninterruptedRun) {
  TempDir d;
  write_toy_corpus(d / "toy", 100);
  const std::string cfg = write_json(d, single_config(d / "toy", 5, 2, 16));
  ASSERT_EQ(run_mel({"train", cfg, "--out", d / "full", "--no-progress"}), 0);
  ASSERT_EQ(run_mel({"train", cfg, "--out", d / "part", "--stop-after", "1", "--no-progress"}), 0);
  ASSERT_EQ(run_mel({"train", "--resume", d / "part", "--no-progress"}), 0);
  EXPECT_EQ(read_file(d / "full/model.safetensors"), read_file(d / "part/model.safetensors"));
}

TEST(TextTraining, PlacedOnThreadsEndsWithTheOneProcessBytes) {
  // Each upstream GPT on its own rank, C on another: the same weights as one process.
  TempDir d;
  write_toy_corpus(d / "toy", 100);
  Json j = mel_config(d / "toy", 4, 1, 16);
  j["ensemble"]["upstream"]["backbone"][2]["dropout"] = 0.1;
  const std::string cfg = write_json(d, j);
  ASSERT_EQ(run_mel({"train", cfg, "--out", d / "one", "--no-progress"}), 0);
  ASSERT_EQ(
      run_mel({"train", cfg, "--out", d / "placed", "--placement", "threads", "--no-progress"}), 0);
  EXPECT_EQ(read_file(d / "one/model.safetensors"), read_file(d / "placed/model.safetensors"));
  EXPECT_EQ(read_file(d / "one/optimizer.safetensors"),
            read_file(d / "placed/optimizer.safetensors"));
}

TEST(TextBadInput, CorpusContextAndVocabularyErrorsNameTheProblem) {
  TempDir d;
  std::string err;
  // A missing corpus names the script that writes it.
  const std::string missing = write_json(d, single_config(d / "nowhere", 5, 1), "missing.json");
  EXPECT_EQ(run_mel({"train", missing, "--out", d / "r1"}, &err), 1);
  EXPECT_NE(err.find("make_text_corpus.sh"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(d / "r1/model.safetensors"));
  // An empty folder.
  fs::create_directories(d / "empty");
  const std::string empty = write_json(d, single_config(d / "empty", 5, 1), "empty.json");
  EXPECT_EQ(run_mel({"train", empty, "--out", d / "r2"}, &err), 1);
  EXPECT_NE(err.find(d / "empty"), std::string::npos) << err;
  // A file that is not UTF-8.
  fs::create_directories(d / "latin1");
  std::ofstream(d / "latin1/a.txt") << "caf\xe9\n%\nok\n";
  const std::string latin = write_json(d, single_config(d / "latin1", 5, 1), "latin1.json");
  EXPECT_EQ(run_mel({"train", latin, "--out", d / "r3"}, &err), 1);
  EXPECT_NE(err.find("a.txt"), std::string::npos) << err;
  EXPECT_NE(err.find("UTF-8"), std::string::npos) << err;
  // A context longer than the validation split allows.
  write_toy_corpus(d / "toy", 30);
  const std::string longer = write_json(d, single_config(d / "toy", 5, 1, 4096), "long.json");
  EXPECT_EQ(run_mel({"train", longer, "--out", d / "r4"}, &err), 1);
  EXPECT_NE(err.find("a context of 4096 needs at least 4097"), std::string::npos) << err;
  // A stored vocabulary that lacks characters of the corpus.
  Json j = single_config(d / "toy", 5, 1);
  j["data"]["text"]["vocabulary"] = "abc \n";
  const std::string vocab = write_json(d, j, "vocab.json");
  EXPECT_EQ(run_mel({"train", vocab, "--out", d / "r5"}, &err), 1);
  EXPECT_NE(err.find("'t'"), std::string::npos) << err;
  // A text model on an image dataset, and sampling from a run that is not text.
  Json k = single_config(d / "toy", 5, 1);
  k["data"]["text"]["vocabulary"] = 5;
  const std::string bad = write_json(d, k, "bad.json");
  EXPECT_EQ(run_mel({"info", bad}, &err), 1);
  EXPECT_NE(err.find("data.text.vocabulary"), std::string::npos) << err;
}

}  // namespace
}  // namespace mel::app
