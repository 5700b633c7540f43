// Failout (train.failout): upstream servers down during training. A server down at every step
// leaves its model and the heads over it exactly at their initial weights; reruns agree; the
// placed run (threads) equals the one-process run byte for byte, resumed or not; bad values are
// errors naming the field.
#include <gtest/gtest.h>

#include "app/ensemble_run.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "tests/app/app_testing.h"
#include "tests/gradcheck.h"

namespace mel::app {
namespace {

using namespace testing;

Json small_failout(const Json& failout) {
  Json c = Json::parse(read_file(source_path("tests/app/placed_small.json")));
  c["train"]["failout"] = failout;
  c["train"]["epochs"] = 1;
  return c;
}

std::map<std::string, std::vector<double>> weights(const std::string& file) {
  std::map<std::string, std::vector<double>> out;
  for (auto& [name, t] : load_safetensors(file).tensors) out[name] = t.to_vector();
  return out;
}

TEST(Failout, AServerAlwaysDownKeepsItsModelAndItsHeadsUntrained) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  const Json c = small_failout(Json::parse("[0.999999, 0]"));  // server 1 down, 2 up
  std::string err;
  ASSERT_EQ(run_mel({"train", write_json(dir, c), "--out", dir / "run", "--no-progress"}, &err), 0)
      << err;
  // the initial weights, as the run made them
  const MelConfig mc = parse_mel_config(c, "c.json", RunOverrides{});
  auto init = build_ensemble_model(mc);
  Generator gen(mc.train.seed);
  init->reset_parameters(gen);
  const auto trained = weights(dir / "run/model.safetensors");
  int same = 0, moved = 0;
  for (const auto& [name, t] : init->state_dict()) {
    const bool frozen = name.starts_with("upstream.0.") || name.starts_with("heads.1+2.");
    ASSERT_TRUE(trained.count(name)) << name;
    if (frozen) {
      EXPECT_EQ(trained.at(name), t.to_vector()) << name << " trained while its server was down";
      ++same;
    } else if (trained.at(name) != t.to_vector()) {
      ++moved;
    }
  }
  EXPECT_GE(same, 10);  // conv weight, batch norm (weight, bias, statistics), exit, head
  EXPECT_GE(moved, 4);  // upstream 2 trained
  const Json report = Json::parse(read_file(dir / "run/metrics.jsonl"));
  // the absent predictors were never scored in training, the present one was
  EXPECT_EQ(report["train_accuracy"]["1"], 0.0);
  EXPECT_GT(report["train_accuracy"]["2"].get<double>(), 0.15);  // above chance
}

TEST(Failout, RerunsAgreeAndPlacedRunsEqualOneProcess) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  Json c = small_failout(0.3);
  c["train"]["epochs"] = 2;
  const std::string p = write_json(dir, c);
  std::string err;
  for (const char* out : {"a", "b"}) {
    ASSERT_EQ(run_mel({"train", p, "--out", dir / out, "--no-progress"}, &err), 0) << err;
  }
  ASSERT_EQ(run_mel({"train", p, "--out", dir / "placed", "--no-progress", "--placement", "threads",
                     "--stop-after", "1"},
                    &err),
            0)
      << err;
  ASSERT_EQ(
      run_mel({"train", "--resume", dir / "placed", "--no-progress", "--placement", "threads"},
              &err),
      0)
      << err;
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_TRUE(read_file(dir / "a/" + f) == read_file(dir / "b/" + f)) << f;
    EXPECT_TRUE(read_file(dir / "a/" + f) == read_file(dir / "placed/" + f)) << f;
  }
  // failures changed the training: not the run without them
  c["train"].erase("failout");
  ASSERT_EQ(
      run_mel({"train", write_json(dir, c, "none.json"), "--out", dir / "none", "--no-progress"},
              &err),
      0)
      << err;
  EXPECT_NE(weights(dir / "a/model.safetensors"), weights(dir / "none/model.safetensors"));
}

TEST(Failout, BadValuesAreErrorsNamingTheField) {
  TempDir dir;
  auto expect_error = [&](const Json& c, const std::string& what) {
    std::string err;
    EXPECT_EQ(run_mel({"train", write_json(dir, c), "--out", dir / "out"}, &err), 1);
    EXPECT_NE(err.find(what), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(dir / "out"));
  };
  expect_error(small_failout(1.0), "train.failout: probabilities must be in [0, 1), got 1");
  expect_error(small_failout(-0.1), "got -0.1");
  expect_error(small_failout(Json::parse("[0.1, 0.2, 0.3]")),
               "train.failout: has 3 probabilities for 2 upstream servers");
  expect_error(small_failout(Json::array()), "expected a probability or one per server");
  Json single = Json::parse(read_file(source_path("configs/fmnist_original.json")));
  single["train"]["failout"] = 0.1;
  expect_error(single, "simulates failing servers of a MEL ensemble");
}

}  // namespace
}  // namespace mel::app
