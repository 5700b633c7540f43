// Run folders through the `mel` command: a run name cannot leave runs/, a finished or resumable
// run is kept unless --overwrite, a folder in use names the process holding it, an unwritable
// --out is an error before any training, and eval / resume refuse checkpoints whose files do not
// belong together, are truncated, hold a tensor of the wrong dtype or non-finite values (a run
// folder of an older mel, without checkpoint.json, is accepted with a warning).
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "app/app_testing.h"
#include "core/safetensors.h"
#include "train/checkpoint.h"
#include "train/files.h"

namespace mel::app {
namespace {

using namespace testing;

// The small two-model ensemble of the placed tests, 2 epochs of 2 steps.
Json small_config(const std::string& name = "folders") {
  Json c = Json::parse(read_file(source_path("tests/app/placed_small.json")));
  c["name"] = name;
  c["train"]["epochs"] = 2;
  c["train"]["train_limit"] = 128;
  c["train"]["test_limit"] = 64;
  return c;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

#define EXPECT_HAS(text, part) \
  EXPECT_TRUE(contains(text, part)) << "'" << part << "' not in: " << text

// Rewrites dir/model.safetensors through `change` and commits it in checkpoint.json, as a writer
// of a bad checkpoint would.
template <class F>
void rewrite_model(const std::string& dir, F change) {
  const std::string file = dir + "/model.safetensors";
  SafetensorsFile f = load_safetensors(file);
  change(f.tensors);
  save_safetensors(file, f.tensors, f.metadata);
  Json r = Json::parse(read_file(dir + "/checkpoint.json"));
  r["files"]["model.safetensors"] = {{"bytes", fs::file_size(file)},
                                     {"xxh64", train::file_xxh64_hex(file)}};
  std::ofstream(dir + "/checkpoint.json") << r.dump(2);
}

TEST(RunFolders, ARunNameCannotLeaveRuns) {
  TempDir dir;
  for (const std::string name : {"../escape", "a/b", ".hidden", "..", ""}) {
    std::string err;
    EXPECT_EQ(run_mel({"train", write_json(dir, small_config(name)), "--no-progress"}, &err), 1)
        << name;
    EXPECT_HAS(err, "\"name\"");
    EXPECT_HAS(err, "runs/");
  }
  EXPECT_FALSE(fs::exists("escape"));
  EXPECT_FALSE(fs::exists("runs/a"));
}

TEST(RunFolders, AnUnwritableOutIsAnErrorBeforeTraining) {
  TempDir dir;
  const std::string cfg = write_json(dir, small_config());
  for (const std::string out : {"/sys/kernel/mel_test_run", "/proc/mel_test_run"}) {
    std::string err;
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(run_mel({"train", cfg, "--out", out, "--no-progress"}, &err), 1) << out;
    EXPECT_HAS(err, out);
    // found before the data is read or an epoch trained
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  }
  std::ofstream(dir / "file") << "x";
  std::string err;
  EXPECT_EQ(run_mel({"train", cfg, "--out", dir / "file", "--no-progress"}, &err), 1);
  EXPECT_HAS(err, "not a folder");
}

TEST(RunFolders, AFinishedOrResumableRunIsKeptWithoutOverwrite) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  const std::string cfg = write_json(dir, small_config()), out = dir / "run";
  std::string err;
  ASSERT_EQ(run_mel({"train", cfg, "--out", out, "--no-progress", "--stop-after", "1"}, &err), 0)
      << err;
  EXPECT_EQ(run_mel({"train", cfg, "--out", out, "--no-progress"}, &err), 1);
  EXPECT_HAS(err, "already holds a resumable run (a checkpoint at epoch 1)");
  EXPECT_HAS(err, "mel train --resume " + out);
  EXPECT_HAS(err, "--overwrite");
  EXPECT_EQ(run_mel({"train", "--resume", out, "--overwrite"}, &err), 1);
  EXPECT_HAS(err, "--overwrite");
  ASSERT_EQ(run_mel({"train", "--resume", out, "--no-progress"}, &err), 0) << err;
  EXPECT_EQ(run_mel({"train", cfg, "--out", out, "--no-progress"}, &err), 1);
  EXPECT_HAS(err, "already holds a finished run (a checkpoint at epoch 2)");
  // --overwrite starts over: the old run's files go, the new run's come
  ASSERT_EQ(
      run_mel({"train", cfg, "--out", out, "--no-progress", "--stop-after", "1", "--overwrite"},
              &err),
      0)
      << err;
  EXPECT_FALSE(fs::exists(out + "/report.json"));
  EXPECT_EQ(train::read_checkpoint_info(out).epoch, 1);
  const std::string metrics = read_file(out + "/metrics.jsonl");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 1);
}

TEST(RunFolders, AFolderInUseIsRefusedNamingTheHolder) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  const std::string cfg = write_json(dir, small_config()), out = dir / "run";
  std::string err;
  ASSERT_EQ(run_mel({"train", cfg, "--out", out, "--no-progress", "--stop-after", "1"}, &err), 0)
      << err;
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {  // another process training into the folder
    ::close(done[1]);
    train::RunFolderLock hold(out);
    char c = 'x';
    (void)!::write(ready[1], &c, 1);
    (void)!::read(done[0], &c, 1);
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  const std::string pid = "pid " + std::to_string(child);
  EXPECT_EQ(run_mel({"train", "--resume", out, "--no-progress"}, &err), 1);
  EXPECT_HAS(err, "in use by another mel process");
  EXPECT_HAS(err, pid);
  EXPECT_EQ(run_mel({"train", cfg, "--out", out, "--no-progress", "--overwrite"}, &err), 1);
  EXPECT_HAS(err, pid);
  ::close(done[1]);
  ::waitpid(child, nullptr, 0);
  for (int fd : {ready[0], ready[1], done[0]}) ::close(fd);
  // the holder gone, the run resumes
  EXPECT_EQ(run_mel({"train", "--resume", out, "--no-progress"}, &err), 0) << err;
}

TEST(RunFolders, EvalAndResumeRefuseCheckpointsThatCannotBeTrusted) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  const std::string cfg = write_json(dir, small_config());
  const std::string good = dir / "good", whole = dir / "whole";
  std::string err;
  ASSERT_EQ(run_mel({"train", cfg, "--out", good, "--no-progress", "--stop-after", "1"}, &err), 0)
      << err;
  ASSERT_EQ(run_mel({"train", cfg, "--out", whole, "--no-progress"}, &err), 0) << err;
  auto copy_of = [&](const std::string& name) {
    const std::string d = dir / name;
    fs::copy(good, d, fs::copy_options::recursive);
    return d;
  };
  // the optimizer of epoch 2 beside the model of epoch 1
  {
    const std::string d = copy_of("mixed");
    fs::copy_file(whole + "/optimizer.safetensors", d + "/optimizer.safetensors",
                  fs::copy_options::overwrite_existing);
    EXPECT_EQ(run_mel({"train", "--resume", d, "--no-progress"}, &err), 1);
    EXPECT_HAS(err, d + "/optimizer.safetensors");
    EXPECT_HAS(err, "do not belong together");
  }
  // a truncated model file
  {
    const std::string d = copy_of("truncated");
    const std::string m = read_file(d + "/model.safetensors");
    std::ofstream(d + "/model.safetensors", std::ios::binary) << m.substr(0, m.size() - 100);
    EXPECT_EQ(run_mel({"eval", d, "--test-limit", "16"}, &err), 1);
    EXPECT_HAS(err, "model.safetensors has");
    EXPECT_HAS(err, "truncated");
    EXPECT_EQ(run_mel({"train", "--resume", d, "--no-progress"}, &err), 1);
    EXPECT_HAS(err, "truncated");
  }
  // a NaN weight, committed as if training had written it
  {
    const std::string d = copy_of("nan");
    std::string name;
    rewrite_model(d, [&](auto& tensors) {
      for (auto& [n, t] : tensors) {
        if (t.dtype() != DType::f32 || !name.empty()) continue;
        name = n;
        t = t.clone();
        t.template data<float>()[0] = std::nanf("");
      }
    });
    EXPECT_EQ(run_mel({"eval", d, "--test-limit", "16"}, &err), 1);
    EXPECT_HAS(err, "non-finite");
    EXPECT_HAS(err, "'" + name + "'");
    EXPECT_EQ(run_mel({"train", "--resume", d, "--no-progress"}, &err), 1);
    EXPECT_HAS(err, "non-finite");
    EXPECT_HAS(err, "'" + name + "'");
  }
  // a tensor stored as f64: refused, not converted bit-wise
  {
    const std::string d = copy_of("f64");
    std::string name;
    rewrite_model(d, [&](auto& tensors) {
      for (auto& [n, t] : tensors) {
        if (t.dtype() != DType::f32 || !name.empty()) continue;
        name = n;
        t = t.to(DType::f64);
      }
    });
    EXPECT_EQ(run_mel({"eval", d, "--test-limit", "16"}, &err), 1);
    EXPECT_HAS(err, "'" + name + "' is f64");
    EXPECT_HAS(err, "f32");
    EXPECT_HAS(err, "model.safetensors");
  }
  // a run folder of an older mel (no checkpoint.json): accepted with a warning
  {
    const std::string d = copy_of("old");
    fs::remove(d + "/checkpoint.json");
    EXPECT_EQ(run_mel({"eval", d, "--test-limit", "16"}, &err), 0) << err;
    EXPECT_HAS(err, "warning");
    EXPECT_HAS(err, "no checkpoint.json");
    EXPECT_EQ(run_mel({"train", "--resume", d, "--no-progress"}, &err), 0) << err;
    EXPECT_EQ(read_file(d + "/model.safetensors"), read_file(whole + "/model.safetensors"));
  }
  // and the intact copy resumes to the uninterrupted run's weights
  EXPECT_EQ(run_mel({"train", "--resume", good, "--no-progress"}, &err), 0) << err;
  EXPECT_EQ(read_file(good + "/model.safetensors"), read_file(whole + "/model.safetensors"));
}

}  // namespace
}  // namespace mel::app
