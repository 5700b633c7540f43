// `mel serve` and `mel simulate` end to end: fmnist_mel2 (trained briefly) served as three
// processes, failures injected, and the answers checked against `mel predict` sample by sample.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <zmq.h>

#include <fstream>
#include <map>

#include "app/serving.h"
#include "app_testing.h"
#include "core/factory.h"
#include "core/safetensors.h"
#include "data/npy.h"

namespace mel::app {
namespace {

using namespace testing;

// One briefly trained fmnist_mel2 run and its export, shared by the tests of this file.
class Simulate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_fmnist()) return;
    dir_ = new SuiteDir();
    ASSERT_EQ(run_mel({"train", source_path("configs/fmnist_mel2.json"), "--epochs", "1",
                       "--train-limit", "256", "--test-limit", "640", "--batch", "128", "--out",
                       *dir_ / "run", "--no-progress"}),
              0);
    ASSERT_EQ(run_mel({"export", *dir_ / "run", "--out", *dir_ / "servers"}), 0);
    // Every predictor's class per test sample, to compare the client's answers with.
    ASSERT_EQ(run_mel({"predict", *dir_ / "run", "--test-limit", "640", "--out", *dir_ / "pred"}),
              0);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (dataset-fashion-mnist)";
  }
  // `mel simulate` on the export with servers run by the built mel program.
  static int simulate(const std::string& out, std::vector<std::string> extra,
                      std::string* err = nullptr) {
    std::vector<std::string> args = {"simulate",       *dir_ / "servers",
                                     "--out",          out,
                                     "--batch",        "32",
                                     "--test-limit",   "640",
                                     "--serve-binary", MEL_BINARY,
                                     "--deadline-ms",  "4000",
                                     "--liveness-ms",  "3000"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_mel(args, err);
  }
  // A temporary folder for the whole suite (TempDir is named after a running test).
  struct SuiteDir {
    fs::path path =
        fs::temp_directory_path() / ("mel_test_" + std::to_string(::getpid()) + "_simulate");
    SuiteDir() {
      fs::remove_all(path);
      fs::create_directories(path);
    }
    ~SuiteDir() { fs::remove_all(path); }
    std::string operator/(const std::string& name) const { return (path / name).string(); }
  };
  static SuiteDir* dir_;
};
Simulate::SuiteDir* Simulate::dir_ = nullptr;

Json read_json(const std::string& p) {
  return Json::parse(read_file(p));
}

// The issue's script: upstream 2 killed at request 6 and restarted at request 13. Requests 6..12
// come from exit 1, the rest from head 1+2, nothing is lost, and every answer equals `mel
// predict`'s for that sample and predictor, so each phase's accuracy is the per-sample
// evaluation's on the same samples.
TEST_F(Simulate, KillAndRestartAnUpstream) {
  const std::string out = *dir_ / "kill";
  ASSERT_EQ(simulate(out, {"--schedule", "kill:2@6,restart:2@13"}), 0);
  const Json j = read_json(out + "/simulation.json");
  EXPECT_EQ(j["requests"]["sent"], 20);
  EXPECT_EQ(j["requests"]["answered"], 20);
  EXPECT_EQ(j["requests"]["failed"], 0);
  EXPECT_EQ(j["requests"]["lost"], 0);
  ASSERT_EQ(j["phases"].size(), 3u);
  EXPECT_EQ(j["phases"][0]["last_request"], 5);
  EXPECT_EQ(j["phases"][1]["servers"]["2"], "killed");
  EXPECT_EQ(j["phases"][1]["answered_by"], Json({{"1", 7}}));
  EXPECT_EQ(j["phases"][0]["answered_by"], Json({{"1+2", 6}}));
  EXPECT_EQ(j["phases"][2]["answered_by"], Json({{"1+2", 7}}));

  const Tensor answers = data::load_npy(out + "/answers.npy");
  const Tensor classes = data::load_npy(*dir_ / "pred/classes.npy");  // [N, exit 1, exit 2, head]
  const Tensor labels = data::load_npy(*dir_ / "pred/labels.npy");
  ASSERT_EQ(answers.numel(), 640);
  ASSERT_EQ(classes.shape(), Shape({640, 3}));
  const int64_t* a = answers.data<int64_t>();
  const int64_t* c = classes.data<int64_t>();
  const int64_t* y = labels.data<int64_t>();
  std::vector<int64_t> correct(3, 0);
  for (int64_t s = 0; s < 640; ++s) {
    const int64_t request = s / 32;
    const int phase = request < 6 ? 0 : request < 13 ? 1 : 2;
    const int64_t want = c[s * 3 + (phase == 1 ? 0 : 2)];
    ASSERT_EQ(a[s], want) << "sample " << s;
    correct[static_cast<size_t>(phase)] += want == y[s];
  }
  for (int p = 0; p < 3; ++p) {
    EXPECT_EQ(j["phases"][static_cast<size_t>(p)]["correct"], correct[static_cast<size_t>(p)]);
  }
  // Bytes: each sample's 784 pixels go to both upstreams (plus a small header per request).
  for (const Json& s : j["servers"]) {
    if (s["server"] == "C") continue;
    EXPECT_GT(s["bytes_per_sample_to"].get<double>(), 784.0);
    EXPECT_LT(s["bytes_per_sample_to"].get<double>(), 800.0);
  }
  for (const char* f : {"simulation.txt", "timeline.svg", "requests.csv"}) {
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  }
  EXPECT_NE(read_file(out + "/timeline.svg").find("kill:2@6"), std::string::npos);
}

// Paused, slow, silent and lying servers: each is detected, the request answered from what
// arrived in time, and the reason counted. With C down the exits' probabilities are averaged.
TEST_F(Simulate, PausedDelayedDroppingAndLyingServers) {
  const std::string out = *dir_ / "faults";
  ASSERT_EQ(simulate(out, {"--test-limit", "352", "--deadline-ms", "1500", "--schedule",
                           "garbage:2@1,nan:2@2,heal:2@3,delay:1=3000@4,heal:1@5,drop:2@6,"
                           "heal:2@7,stop:1@8,cont:1@9,kill:C@10"}),
            0);
  const Json j = read_json(out + "/simulation.json");
  EXPECT_EQ(j["requests"]["sent"], 11);
  EXPECT_EQ(j["requests"]["lost"], 0);
  EXPECT_EQ(j["requests"]["failed"], 0);
  std::vector<std::string> by;
  std::string csv = read_file(out + "/requests.csv");
  for (const Json& p : j["phases"]) {
    for (auto& [k, v] : p["answered_by"].items())
      by.push_back(k + "x" + std::to_string(v.get<int>()));
  }
  EXPECT_EQ(by, (std::vector<std::string>{"1+2x1", "1x1", "1x1", "1+2x1", "2x1", "1+2x1", "1x1",
                                          "1+2x1", "2x1", "1+2x1", "1,2x1"}));
  std::map<std::string, Json> servers;
  for (const Json& s : j["servers"]) servers[s["server"]] = s;
  EXPECT_EQ(servers["2"]["outcomes"]["bad reply"], 2);                // wrong shape, then NaN
  EXPECT_GE(servers["1"]["outcomes"]["no reply within 1500 ms"], 2);  // delayed, then paused
  EXPECT_EQ(servers["2"]["outcomes"]["no reply within 1500 ms"], 1);  // dropped
  EXPECT_GE(servers["1"]["late_replies"], 1);                         // the delayed answer
  EXPECT_NE(csv.find("non-finite"), std::string::npos);
  EXPECT_NE(csv.find("expected f32 [32, 10]"), std::string::npos);
}

TEST_F(Simulate, BadInputIsAClearError) {
  std::string err;
  // A deadline of zero answers nothing.
  EXPECT_EQ(simulate(*dir_ / "x", {"--deadline-ms", "0"}, &err), 1);
  EXPECT_NE(err.find("--deadline-ms must be > 0"), std::string::npos) << err;
  // Schedules.
  EXPECT_EQ(simulate(*dir_ / "x", {"--schedule", "explode:2@1"}, &err), 1);
  EXPECT_NE(err.find("unknown action 'explode'"), std::string::npos) << err;
  EXPECT_EQ(simulate(*dir_ / "x", {"--schedule", "kill:3@1"}, &err), 1);
  EXPECT_NE(err.find("server '3' is not 1..2 or C"), std::string::npos) << err;
  EXPECT_EQ(simulate(*dir_ / "x", {"--schedule", "kill:2@99"}, &err), 1);
  EXPECT_NE(err.find("past the last one (19)"), std::string::npos) << err;
  // Addresses: duplicated, missing, unreachable.
  EXPECT_EQ(simulate(*dir_ / "x",
                     {"--servers",
                      "1=tcp://127.0.0.1:7001,2=tcp://127.0.0.1:7001,C=tcp://127.0.0.1:7003"},
                     &err),
            1);
  EXPECT_NE(err.find("address tcp://127.0.0.1:7001 is given for two servers"), std::string::npos)
      << err;
  EXPECT_EQ(
      simulate(*dir_ / "x", {"--servers", "1=tcp://127.0.0.1:7001,C=tcp://127.0.0.1:7003"}, &err),
      1);
  EXPECT_NE(err.find("no address for server 2"), std::string::npos) << err;
  EXPECT_EQ(simulate(*dir_ / "x",
                     {"--servers", "1=tcp://127.0.0.1:1,2=tcp://127.0.0.1:2,C=tcp://127.0.0.1:3",
                      "--start-timeout-ms", "300"},
                     &err),
            1);
  EXPECT_NE(err.find("server 1 at tcp://127.0.0.1:1: no answer to hello within 300 ms"),
            std::string::npos)
      << err;
  EXPECT_EQ(simulate(*dir_ / "x", {"--servers", "1=tcp://127.0.0.1:1,2=udp://x,C=tcp://h:3"}, &err),
            1);
  EXPECT_NE(err.find("'udp://x' is not a tcp://HOST:PORT address"), std::string::npos) << err;
  // A kill needs a process mel simulate started.
  EXPECT_EQ(simulate(*dir_ / "x",
                     {"--servers", "1=tcp://127.0.0.1:1,2=tcp://127.0.0.1:2,C=tcp://127.0.0.1:3",
                      "--schedule", "kill:1@2"},
                     &err),
            1);
  EXPECT_NE(err.find("act on processes mel simulate started"), std::string::npos) << err;
}

// C's file from another run (its fingerprint differs): the client refuses to mix them.
TEST_F(Simulate, ServersOfAnotherRunAreRefused) {
  const std::string other = *dir_ / "other";
  fs::create_directories(other);
  for (const char* f : {"upstream_1.safetensors", "upstream_2.safetensors"}) {
    fs::copy_file(*dir_ / "servers/" + f, other + "/" + f);
  }
  SafetensorsFile c = load_safetensors(*dir_ / "servers/combination.safetensors");
  c.metadata["run"] = "0123456789abcdef";
  save_safetensors(other + "/combination.safetensors", c.tensors, c.metadata);
  std::string err;
  EXPECT_EQ(run_mel({"simulate", other, "--out", *dir_ / "x", "--test-limit", "64",
                     "--serve-binary", MEL_BINARY},
                    &err),
            1);
  EXPECT_NE(err.find("server C"), std::string::npos) << err;
  EXPECT_NE(err.find("serves run 0123456789abcdef"), std::string::npos) << err;
  EXPECT_NE(err.find("different runs"), std::string::npos) << err;
}

// C from a run whose features are narrower (the last conv has 80 channels, not 160): the shapes
// an upstream sends and C expects are compared before anything is served.
TEST_F(Simulate, MismatchedFeatureShapesAreRefused) {
  Json cfg = Json::parse(read_file(source_path("configs/fmnist_mel2.json")));
  Json& backbone = cfg["ensemble"]["upstream"]["backbone"];
  backbone[14]["out"] = 80;
  cfg.erase("original");
  const std::string narrow = *dir_ / "narrow.json";
  std::ofstream(narrow) << cfg.dump(2);
  ASSERT_EQ(run_mel({"train", narrow, "--epochs", "1", "--train-limit", "128", "--test-limit", "64",
                     "--out", *dir_ / "narrow_run", "--no-progress"}),
            0);
  ASSERT_EQ(run_mel({"export", *dir_ / "narrow_run", "--out", *dir_ / "narrow_servers"}), 0);
  const std::string mixed = *dir_ / "mixed";
  fs::create_directories(mixed);
  for (const char* f : {"upstream_1.safetensors", "upstream_2.safetensors"}) {
    fs::copy_file(*dir_ / "servers/" + f, mixed + "/" + f);
  }
  fs::copy_file(*dir_ / "narrow_servers/combination.safetensors",
                mixed + "/combination.safetensors");
  std::string err;
  EXPECT_EQ(run_mel({"simulate", mixed, "--out", *dir_ / "x", "--test-limit", "64",
                     "--serve-binary", MEL_BINARY},
                    &err),
            1);
  EXPECT_NE(err.find("mismatched feature shapes: upstream 1 sends [160] per sample, server C "
                     "expects [80] for it"),
            std::string::npos)
      << err;
}

// `mel serve`: a port in use, a file that is not a server's, a bad heartbeat interval.
TEST_F(Simulate, ServeRefusesBadSetups) {
  serving::Context ctx;
  serving::Socket taken(ctx, ZMQ_ROUTER);
  const std::string endpoint = taken.bind("tcp://127.0.0.1:*");
  std::string err;
  EXPECT_EQ(run_mel({"serve", *dir_ / "servers/upstream_1.safetensors", "--bind", endpoint}, &err),
            1);
  EXPECT_NE(err.find("cannot bind " + endpoint + ": Address already in use"), std::string::npos)
      << err;
  EXPECT_EQ(run_mel({"serve", *dir_ / "run/model.safetensors"}, &err), 1);
  EXPECT_NE(err.find("not a server file of `mel export`"), std::string::npos) << err;
  EXPECT_EQ(
      run_mel({"serve", *dir_ / "servers/combination.safetensors", "--heartbeat-ms", "0"}, &err),
      1);
  EXPECT_NE(err.find("--heartbeat-ms must be > 0"), std::string::npos) << err;
  EXPECT_EQ(
      run_mel({"serve", *dir_ / "servers/combination.safetensors", "--bind", "ipc:///tmp/x"}, &err),
      1);
  EXPECT_NE(err.find("is not a tcp://HOST:PORT address"), std::string::npos) << err;
}

// The wire format: what a broken peer sends is a reason, never a crash.
TEST(Serving, MalformedMessagesAreReasons) {
  using serving::decode;
  using serving::encode;
  using serving::Message;
  Message m{{{"type", "features"}, {"id", 3}}, {{"x", arange(6, DType::i64).reshape({2, 3})}}};
  std::vector<std::string> f = encode(m);
  Message back;
  std::string err;
  ASSERT_TRUE(decode(f, 0, back, err)) << err;
  EXPECT_EQ(back.header["id"], 3);
  ASSERT_NE(back.find("x"), nullptr);
  EXPECT_EQ(back.find("x")->to_vector(), (std::vector<double>{0, 1, 2, 3, 4, 5}));

  auto reason = [&](std::vector<std::string> frames) {
    Message out;
    std::string why;
    EXPECT_FALSE(decode(frames, 0, out, why));
    return why;
  };
  EXPECT_NE(reason({}).find("empty message"), std::string::npos);
  EXPECT_NE(reason({"{not json"}).find("not a JSON object"), std::string::npos);
  EXPECT_NE(reason({f[0]}).find("lists 1 tensor(s) but 0 data frame(s) follow"), std::string::npos);
  EXPECT_NE(reason({f[0], f[1].substr(3)}).find("needs 48 bytes, its frame has 45"),
            std::string::npos);
  EXPECT_NE(reason({R"({"tensors":[{"name":"x","dtype":"f99","shape":[1]}]})", "abcd"})
                .find("dtype 'f99'"),
            std::string::npos);
  EXPECT_NE(reason({R"({"tensors":[{"name":"x","dtype":"f32","shape":[-1]}]})", ""})
                .find("malformed shape"),
            std::string::npos);
  EXPECT_NE(
      reason({R"({"tensors":[{"name":"x","dtype":"u8","shape":[2147483648,2147483648,4]}]})", ""})
          .find("too large"),
      std::string::npos);
  EXPECT_NE(reason({R"({"tensors":[7]})", ""}).find("is not {\"name\", \"dtype\", \"shape\"}"),
            std::string::npos);
}

}  // namespace
}  // namespace mel::app
