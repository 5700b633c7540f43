// Placed training (--placement threads: one rank per server as threads of this process): the run
// folder equals a single-process run's byte for byte (weights, optimizer state), with diversity,
// M = 3, baselines, clipping (within tolerance) and stop + resume; and clear errors.
#include <gtest/gtest.h>

#include <filesystem>

#include "app/ensemble_run.h"
#include "app/placed_run.h"
#include "core/safetensors.h"
#include "data/tensor_loader.h"
#include "dist/inprocess.h"
#include "dist/mpi.h"
#include "mel/placed.h"
#include "tests/app/app_testing.h"
#include "tests/gradcheck.h"
#include "train/checkpoint.h"

namespace mel::app {
namespace {

namespace fs = std::filesystem;
using namespace testing;

// Two different upstream models (one with batch norm), an mlp head and the diversity term: every
// message of a step. tests/app/placed_servers.sh trains it under mpirun too.
Json small_mel() {
  return Json::parse(read_file(source_path("tests/app/placed_small.json")));
}

std::vector<std::vector<double>> tensors_of(const std::string& file) {
  std::vector<std::vector<double>> out;
  for (auto& [name, t] : load_safetensors(file).tensors) out.push_back(t.to_vector());
  return out;
}

// Trains `cfg` in one process and placed on threads (with `placed_extra` options); returns both
// run folders.
std::pair<std::string, std::string> train_both(const TempDir& dir, const Json& cfg,
                                               const std::vector<std::string>& placed_extra = {}) {
  const std::string path = write_json(dir, cfg);
  std::vector<std::string> single = {"train", path, "--out", dir / "single", "--no-progress"};
  std::vector<std::string> placed = {"train",         path,          "--out",  dir / "placed",
                                     "--no-progress", "--placement", "threads"};
  placed.insert(placed.end(), placed_extra.begin(), placed_extra.end());
  std::string err;
  EXPECT_EQ(run_mel(single, &err), 0) << err;
  EXPECT_EQ(run_mel(placed, &err), 0) << err;
  return {dir / "single", dir / "placed"};
}

// Same tensor names and values bit for bit; a mismatch names the tensor and its first difference.
void expect_same_files(const std::string& a, const std::string& b) {
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    const auto x = load_safetensors(a + "/" + f).tensors;
    const auto y = load_safetensors(b + "/" + f).tensors;
    ASSERT_EQ(x.size(), y.size()) << f;
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(x[i].first, y[i].first) << f;
      const auto u = x[i].second.to_vector(), v = y[i].second.to_vector();
      ASSERT_EQ(u.size(), v.size()) << f << " " << x[i].first;
      for (size_t k = 0; k < u.size(); ++k) {
        if (u[k] != v[k]) {
          ADD_FAILURE() << f << ": " << x[i].first << "[" << k << "] " << u[k] << " vs " << v[k];
          break;
        }
      }
    }
    EXPECT_TRUE(read_file(a + "/" + f) == read_file(b + "/" + f)) << f << " bytes differ";
  }
}

TEST(Placed, ThreadsEqualOneProcessByteForByte) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  const auto [single, placed] = train_both(dir, small_mel());
  expect_same_files(single, placed);
  const Json a = Json::parse(read_file(single + "/report.json"));
  const Json b = Json::parse(read_file(placed + "/report.json"));
  EXPECT_EQ(a["accuracy"], b["accuracy"]);
  EXPECT_EQ(a["failures"], b["failures"]);
  ASSERT_TRUE(b.contains("placement"));
  EXPECT_EQ(b["placement"]["backend"], "inprocess");
  EXPECT_EQ(b["placement"]["ranks"], 3);
  EXPECT_EQ(b["placement"]["feature_bytes_per_sample"]["1"], 8 * 7 * 7 * 4);
  EXPECT_EQ(b["placement"]["per_rank"].size(), 3u);
  // the checkpoint has the single-process format: eval and export work on it unchanged
  EXPECT_EQ(run_mel({"eval", placed}), 0);
  EXPECT_EQ(run_mel({"export", placed, "--out", dir / "export"}), 0);
}

TEST(Placed, ThreeModelsAndTheIndependentBaselineToo) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  Json c = small_mel();
  Json third = c["ensemble"]["upstream"][0];
  c["ensemble"]["upstream"].push_back(third);
  c["baseline"] = "independent";  // phase 1 exits only, phase 2 heads on frozen upstreams
  c["train"]["epochs"] = 1;
  const auto [single, placed] = train_both(dir, c);
  expect_same_files(single, placed);
}

TEST(Placed, StopAndResumeEndWithTheWeightsOfOneProcess) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  Json c = small_mel();
  c["train"]["epochs"] = 3;
  const std::string path = write_json(dir, c);
  std::string err;
  ASSERT_EQ(run_mel({"train", path, "--out", dir / "single", "--no-progress"}, &err), 0) << err;
  ASSERT_EQ(run_mel({"train", path, "--out", dir / "placed", "--no-progress", "--placement",
                     "threads", "--stop-after", "1"},
                    &err),
            0)
      << err;
  EXPECT_EQ(train::read_checkpoint_info(dir / "placed").epoch, 1);
  // resumed placed from epoch 1, then in one process from epoch 2: one checkpoint format
  ASSERT_EQ(run_mel({"train", "--resume", dir / "placed", "--no-progress", "--placement", "threads",
                     "--stop-after", "2"},
                    &err),
            0)
      << err;
  ASSERT_EQ(run_mel({"train", "--resume", dir / "placed", "--no-progress"}, &err), 0) << err;
  expect_same_files(dir / "single", dir / "placed");
}

TEST(Placed, GlobalClippingMatchesOneProcessClosely) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  Json c = small_mel();
  c["train"]["clip_grad_norm"] = 0.5;  // the norm is summed over the ranks' parts
  c["train"]["epochs"] = 1;
  const auto [single, placed] = train_both(dir, c);
  const auto a = tensors_of(single + "/model.safetensors");
  const auto b = tensors_of(placed + "/model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < a[i].size(); ++j) {
      ASSERT_NEAR(a[i][j], b[i][j], 1e-4 + 1e-4 * std::abs(a[i][j])) << "tensor " << i;
    }
  }
}

// Data parallelism: 2 replicas of the placement, each on half of every batch, gradients averaged:
// the weights of one process at the same global batch up to the order of the sums (no batch norm
// here: with it each replica normalises its half of the batch, which is a different model).
TEST(Placed, ReplicasMatchOneProcessAtTheSameGlobalBatch) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  Json c = small_mel();
  c["ensemble"]["upstream"][0]["backbone"] = Json::parse(
      R"([{"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}, {"type": "relu"},
          {"type": "maxpool2d", "kernel": 4}, {"type": "flatten"}])");
  c["train"]["train_limit"] = 600;  // the last batch (24) splits unevenly too
  const auto [single, placed] = train_both(dir, c, {"--replicas", "2"});
  const auto a = tensors_of(single + "/model.safetensors");
  const auto b = tensors_of(placed + "/model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < a[i].size(); ++j) {
      ASSERT_NEAR(a[i][j], b[i][j], 1e-5) << "tensor " << i;
    }
  }
  const Json rb = Json::parse(read_file(placed + "/report.json"));
  EXPECT_EQ(rb["placement"]["replicas"], 2);
  EXPECT_EQ(rb["placement"]["ranks"], 6);
  // the training metrics cover the whole batch, not one replica's half
  auto first_epoch = [](const std::string& run) {
    const std::string lines = read_file(run + "/metrics.jsonl");
    return Json::parse(lines.substr(0, lines.find('\n')));
  };
  const Json ma = first_epoch(single), mb = first_epoch(placed);
  EXPECT_NEAR(ma["train_loss"].get<double>(), mb["train_loss"].get<double>(), 1e-4);
  EXPECT_NEAR(ma["train_accuracy"]["1+2"].get<double>(), mb["train_accuracy"]["1+2"].get<double>(),
              0.01);
  // with failout and batch norm it trains, and resumes
  c = small_mel();
  c["train"]["failout"] = 0.2;
  const std::string p = write_json(dir, c, "bn.json");
  std::string err;
  ASSERT_EQ(run_mel({"train", p, "--out", dir / "bn", "--no-progress", "--placement", "threads",
                     "--replicas", "3", "--stop-after", "1"},
                    &err),
            0)
      << err;
  ASSERT_EQ(run_mel({"train", "--resume", dir / "bn", "--no-progress", "--placement", "threads",
                     "--replicas", "3"},
                    &err),
            0)
      << err;
  EXPECT_EQ(train::read_checkpoint_info(dir / "bn").epoch, 2);
}

TEST(Placed, BadPlacementsAreClearErrors) {
  TempDir dir;
  std::string err;
  const std::string single = source_path("configs/fmnist_original.json");
  EXPECT_EQ(run_mel({"train", single, "--placement", "threads", "--out", dir / "x"}, &err), 1);
  EXPECT_NE(err.find("is a single model; placement splits an ensemble"), std::string::npos) << err;
  const std::string mel2 = source_path("configs/fmnist_mel2.json");
  EXPECT_NE(run_mel({"train", mel2, "--placement", "racks", "--out", dir / "x"}, &err), 0);
  EXPECT_NE(err.find("racks not in {single,threads,servers}"), std::string::npos) << err;
  if (!dist::launched_by_mpi()) {
    EXPECT_EQ(run_mel({"train", mel2, "--placement", "servers", "--out", dir / "x"}, &err), 1);
    EXPECT_TRUE(err.find("mpirun -np 3") != std::string::npos ||
                err.find("no MPI backend") != std::string::npos)
        << err;
  }
  EXPECT_NE(run_mel({"train", mel2, "--replicas", "2", "--out", dir / "x"}, &err), 0);
  EXPECT_NE(err.find("add --placement threads or servers"), std::string::npos) << err;
  Json big = small_mel();
  big["train"]["batch_size"] = 2;
  EXPECT_NE(run_mel({"train", write_json(dir, big), "--placement", "threads", "--replicas", "3",
                     "--out", dir / "x"},
                    &err),
            0);
  EXPECT_NE(err.find("3 replicas split every batch of 2 samples"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "x"));
  // a world of the wrong size
  MelConfig c = parse_mel_config(small_mel(), "placed.json", RunOverrides{});
  auto model = build_ensemble_model(c);
  data::TensorLoader none(zeros({1, 1, 28, 28}), tensor_i64({0}, {1}), 1);
  dist::run_ranks(2, [&](dist::Communicator& comm) {
    EXPECT_MEL_ERROR(method::PlacedMelTask(model, mel_spec(c, Device::cpu()), none, none, comm),
                     "placed training of 2 models needs 3 ranks", "has 2");
  });
}

}  // namespace
}  // namespace mel::app
