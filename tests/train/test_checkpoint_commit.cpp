// Checkpoints that cannot disagree: checkpoint.json commits each epoch's model and optimizer files
// (sizes and XXH64 hashes); a crash at any point of a save (the MEL_TEST_KILL_AT hook, in a forked
// process) leaves a folder that reads as one whole epoch; files of different epochs, truncated or
// missing files, tensors of the wrong dtype or shape and non-finite values are errors naming the
// file and the tensor. Run folders: the lock names its holder's pid, temporary names are per
// process, and an unwritable folder is found at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/json_reader.h"
#include "core/mel.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "tests/gradcheck.h"
#include "tests/temp_dir.h"
#include "train/checkpoint.h"
#include "train/files.h"

namespace mel::train {
namespace {

namespace fs = std::filesystem;

struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("mel_ckpt_") {}
};

std::string read_text(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A small model and its SGD optimizer: an epoch's worth of state to checkpoint.
struct Trained {
  std::shared_ptr<nn::Linear> model = std::make_shared<nn::Linear>(4, 3);
  std::unique_ptr<nn::FlatParameters> flat;
  std::unique_ptr<nn::Sgd> opt;
  explicit Trained(uint64_t seed) {
    Generator g(seed);
    model->reset_parameters(g);
    flat = std::make_unique<nn::FlatParameters>(*model);
    nn::SgdOptions o;
    o.momentum = 0.9;
    opt = std::make_unique<nn::Sgd>(*flat, o);
  }
  void save(const std::string& dir, int64_t epoch) const {
    const nn::NamedTensors state = opt->state();
    save_checkpoint(dir, *model, &state, {"{\"name\": \"t\"}", epoch, 10 * epoch});
  }
  std::vector<double> weights() const { return model->weight.to_vector(); }
};

std::vector<double> loaded_weights(const std::string& dir) {
  Trained fresh(99);
  load_model_checkpoint(dir, *fresh.model);
  return fresh.weights();
}

// Runs `body` in a child process; returns its wait status.
template <class F>
int in_child(F body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    try {
      body();
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

TEST(CheckpointCommit, Xxh64MatchesTheReferenceVectors) {
  EXPECT_EQ(xxh64_hex("", 0), "ef46db3751d8e999");
  EXPECT_EQ(xxh64_hex("abc", 3), "44bc2cf5ad770999");
  const std::string s = "Nobody inspects the spammish repetition";
  EXPECT_EQ(xxh64_hex(s.data(), s.size()), "fbcea83c8a378bf1");
  TempDir dir;
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7919) >> 3);
  std::ofstream(dir / "f", std::ios::binary) << big;
  EXPECT_EQ(file_xxh64_hex(dir / "f"), xxh64_hex(big.data(), big.size()));  // streamed = whole
}

TEST(CheckpointCommit, TheRecordNamesBothFilesWithTheEpoch) {
  TempDir dir;
  Trained a(1);
  a.save(dir.path.string(), 3);
  const Json r = Json::parse(read_text(dir / "checkpoint.json"));
  EXPECT_EQ(r["epoch"].get<int64_t>(), 3);
  EXPECT_EQ(r["step"].get<int64_t>(), 30);
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_EQ(r["files"][f]["bytes"].get<uint64_t>(), fs::file_size(dir / f)) << f;
    EXPECT_EQ(r["files"][f]["xxh64"].get<std::string>(), file_xxh64_hex(dir / f)) << f;
    EXPECT_FALSE(fs::exists(dir / (std::string(f) + ".next")));
  }
  const Checkpoint c = read_checkpoint(dir.path.string());
  EXPECT_EQ(c.info.epoch, 3);
  EXPECT_EQ(loaded_weights(dir.path.string()), a.weights());
  EXPECT_NO_THROW(read_optimizer_checkpoint(dir.path.string(), c.info));
  // model.safetensors stays a plain safetensors file with the metadata beside the tensors
  EXPECT_EQ(load_safetensors(dir / "model.safetensors").metadata.at("epoch"), "3");
}

// A kill at every point of a save: before the commit the folder reads as the previous epoch,
// after it as the new one; recovery leaves no staged file and the same epoch.
TEST(CheckpointCommit, AKillAtAnyPointOfASaveLeavesOneWholeEpoch) {
  const Trained one(1), two(2);
  for (const std::string point : {"after_optimizer_write", "after_model_write", "after_commit",
                                  "after_optimizer_rename", "after_model_rename"}) {
    TempDir dir;
    const std::string d = dir.path.string();
    one.save(d, 1);
    const int status = in_child([&] {
      ::setenv("MEL_TEST_KILL_AT", (point + "@2").c_str(), 1);
      two.save(d, 2);
    });
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << point;
    const bool committed = point != "after_optimizer_write" && point != "after_model_write";
    const int64_t epoch = committed ? 2 : 1;
    const Trained& expected = committed ? two : one;
    for (int pass = 0; pass < 2; ++pass) {  // as left by the kill, then recovered
      const Checkpoint c = read_checkpoint(d);
      EXPECT_EQ(c.info.epoch, epoch) << point << " pass " << pass;
      EXPECT_EQ(loaded_weights(d), expected.weights()) << point;
      const nn::NamedTensors opt = read_optimizer_checkpoint(d, c.info);
      Trained fresh(7);
      load_optimizer_state(d, *fresh.opt, opt);
      recover_checkpoint(d);
    }
    EXPECT_FALSE(fs::exists(dir / "model.safetensors.next")) << point;
    EXPECT_FALSE(fs::exists(dir / "optimizer.safetensors.next")) << point;
    EXPECT_EQ(load_safetensors(dir / "model.safetensors").metadata.at("epoch"),
              std::to_string(epoch))
        << point;
  }
  // the epoch filter: a kill point of another epoch does nothing
  TempDir dir;
  const int status = in_child([&] {
    ::setenv("MEL_TEST_KILL_AT", "after_commit@5", 1);
    two.save(dir.path.string(), 2);
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(CheckpointCommit, FilesOfDifferentEpochsAreAnErrorNamingThem) {
  TempDir dir;
  const std::string a = dir / "a", b = dir / "b";
  fs::create_directories(a);
  fs::create_directories(b);
  Trained(1).save(a, 1);
  Trained(2).save(b, 2);
  const CheckpointInfo info = read_checkpoint(a).info;
  // the optimizer of epoch 2 beside the model of epoch 1
  fs::copy_file(b + "/optimizer.safetensors", a + "/optimizer.safetensors",
                fs::copy_options::overwrite_existing);
  EXPECT_MEL_ERROR(read_optimizer_checkpoint(a, info), "optimizer.safetensors",
                   "do not belong together", "checkpoint.json (epoch 1");
  // the model of epoch 2 under the record of epoch 1
  fs::copy_file(b + "/model.safetensors", a + "/model.safetensors",
                fs::copy_options::overwrite_existing);
  EXPECT_MEL_ERROR(read_checkpoint(a), "model.safetensors", "do not belong together");
  EXPECT_MEL_ERROR(read_checkpoint(a + "/model.safetensors"), "model.safetensors");
  // a record and files all of epoch 2, but a model file of epoch 1 recorded as epoch 2
  fs::copy_file(b + "/checkpoint.json", a + "/checkpoint.json",
                fs::copy_options::overwrite_existing);
  EXPECT_NO_THROW(read_checkpoint(a));
  EXPECT_NO_THROW(read_optimizer_checkpoint(a, read_checkpoint(a).info));
  // without a record (an older mel): the epochs in the files' metadata must still agree
  Trained(1).save(b, 1);
  fs::copy_file(a + "/optimizer.safetensors", b + "/optimizer.safetensors",
                fs::copy_options::overwrite_existing);
  fs::remove(b + "/checkpoint.json");
  const CheckpointInfo old = read_checkpoint(b).info;  // accepted, with a warning
  EXPECT_EQ(old.epoch, 1);
  EXPECT_MEL_ERROR(read_optimizer_checkpoint(b, old), "optimizer.safetensors is at epoch 2",
                   "model checkpoint is at epoch 1", "different epochs");
}

TEST(CheckpointCommit, MissingTruncatedOrDamagedFilesAreErrors) {
  TempDir dir;
  const std::string d = dir.path.string();
  Trained(1).save(d, 1);
  const std::string model = read_text(dir / "model.safetensors");
  std::ofstream(dir / "model.safetensors", std::ios::binary) << model.substr(0, model.size() / 2);
  EXPECT_MEL_ERROR(read_checkpoint(d), "model.safetensors", "truncated", "checkpoint.json");
  std::string flipped = model;
  flipped[flipped.size() - 3] ^= 0x40;
  std::ofstream(dir / "model.safetensors", std::ios::binary) << flipped;
  EXPECT_MEL_ERROR(read_checkpoint(d), "model.safetensors", "other contents");
  fs::remove(dir / "model.safetensors");
  EXPECT_MEL_ERROR(read_checkpoint(d), "model.safetensors is missing");
  std::ofstream(dir / "model.safetensors", std::ios::binary) << model;
  fs::remove(dir / "optimizer.safetensors");
  EXPECT_MEL_ERROR(read_optimizer_checkpoint(d, read_checkpoint(d).info),
                   "optimizer.safetensors is missing");
  std::ofstream(dir / "checkpoint.json") << "{\"format\": \"mel-checkpoint-1\", \"epoch\": 1}";
  EXPECT_MEL_ERROR(read_checkpoint(d), "checkpoint.json", "not a valid checkpoint record");
  TempDir empty;
  EXPECT_MEL_ERROR(read_checkpoint(empty.path.string()), "no checkpoint here");
}

TEST(CheckpointCommit, WrongDtypeShapeOrNonFiniteTensorsAreRefused) {
  TempDir dir;
  const std::string file = dir / "m.safetensors";
  const std::map<std::string, std::string> meta = {
      {"format", kCheckpointFormat}, {"config", "{}"}, {"epoch", "1"}, {"step", "1"}};
  Trained t(1);
  // f64 where the model has f32: refused, never converted bit-wise
  save_safetensors(file, {{"weight", t.model->weight.to(DType::f64)}, {"bias", t.model->bias}},
                   meta);
  Trained into(5);
  EXPECT_MEL_ERROR(load_model_checkpoint(file, *into.model), "m.safetensors", "wrong dtype",
                   "'weight' is f64", "f32", "in the model");
  EXPECT_EQ(into.weights(), Trained(5).weights());  // untouched
  save_safetensors(file, {{"weight", zeros({4, 3})}, {"bias", t.model->bias}}, meta);
  EXPECT_MEL_ERROR(load_model_checkpoint(file, *into.model), "wrong shape: weight", "[4, 3]",
                   "[3, 4]");
  // a NaN and an infinity: refused with the tensor's name
  Tensor w = t.model->weight.clone();
  w.data<float>()[5] = std::nanf("");
  Tensor b = t.model->bias.clone();
  b.data<float>()[0] = INFINITY;
  save_safetensors(file, {{"weight", w}, {"bias", b}}, meta);
  EXPECT_MEL_ERROR(load_model_checkpoint(file, *into.model), "m.safetensors", "non-finite",
                   "'weight' (1 of 12 values, the first nan at index 5)", "'bias'");
  // the optimizer state: the same checks
  nn::NamedTensors state = t.opt->state();
  for (auto& [n, s] : state) {
    if (n == "momentum_buffer") s = s.to(DType::f64);
  }
  EXPECT_MEL_ERROR(load_optimizer_state(dir.path.string(), *into.opt, state),
                   "optimizer.safetensors", "'momentum_buffer'", "f64", "f32");
  state = t.opt->state();
  for (auto& [n, s] : state) {
    if (n == "momentum_buffer") {
      s = s.clone();
      s.data<float>()[2] = std::nanf("");
    }
  }
  EXPECT_MEL_ERROR(load_optimizer_state(dir.path.string(), *into.opt, state), "non-finite",
                   "'momentum_buffer'");
}

TEST(RunFolder, TheLockNamesTheHolderAndNests) {
  TempDir dir;
  const std::string d = dir / "run";
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(done[1]);
    RunFolderLock hold(d);
    char c = 'x';
    (void)!::write(ready[1], &c, 1);
    (void)!::read(done[0], &c, 1);  // until the parent closes its end
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  const std::string pid = "pid " + std::to_string(child);
  EXPECT_MEL_ERROR(RunFolderLock{d}, "in use by another mel process", pid.c_str(), ".lock");
  ::close(done[1]);
  ::waitpid(child, nullptr, 0);
  {
    RunFolderLock outer(d);
    RunFolderLock inner(d);  // the same process claims it again: nested
    EXPECT_EQ(read_text(d + "/.lock"), std::to_string(::getpid()) + "\n");
  }
  // released: another process can take it
  EXPECT_EQ(in_child([&] { RunFolderLock again(d); }), 0);
  for (int fd : {ready[0], ready[1], done[0]}) ::close(fd);
}

TEST(RunFolder, TwoWritersOfOneFileNeverShareATemporary) {
  TempDir dir;
  const std::string path = dir / "report.json";
  const std::string mine(100000, 'p'), theirs(100000, 'c');
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    try {
      for (int i = 0; i < 200; ++i) write_file_atomic(path, theirs);
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  for (int i = 0; i < 200; ++i) ASSERT_NO_THROW(write_file_atomic(path, mine));
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const std::string got = read_text(path);
  EXPECT_TRUE(got == mine || got == theirs);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    ++files;
    EXPECT_EQ(e.path().filename(), "report.json");
  }
  EXPECT_EQ(files, 1);  // no temporary left behind
}

TEST(RunFolder, AnUnwritableFolderIsFoundAtOnce) {
  EXPECT_MEL_ERROR(check_writable("/proc"), "/proc", "not writable");
  TempDir dir;
  EXPECT_NO_THROW(check_writable(dir.path.string()));
  EXPECT_TRUE(fs::is_empty(dir.path));  // the probe is gone
  std::ofstream(dir / "file") << "x";
  EXPECT_MEL_ERROR(ensure_dir(dir / "file"), "not a folder");
}

TEST(RunFolder, ANewRunRemovesTheOldCheckpointAndTemporaries) {
  TempDir dir;
  const std::string d = dir.path.string();
  Trained(1).save(d, 1);
  std::ofstream(dir / "metrics.jsonl") << "{}\n";
  std::ofstream(dir / "model.safetensors.next.tmp") << "x";
  std::ofstream(dir / "report.json.tmp.123.0") << "x";
  std::ofstream(dir / "notes.txt") << "mine";
  EXPECT_TRUE(has_checkpoint(d));
  remove_run_files(d);
  EXPECT_FALSE(has_checkpoint(d));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir.path)) left.push_back(e.path().filename());
  EXPECT_EQ(left, std::vector<std::string>{"notes.txt"});
}

}  // namespace
}  // namespace mel::train
