// Helpers shared by the end-to-end tests of the `mel` command: temporary run folders, running
// the CLI in-process with stderr captured, and small file utilities.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "app/cli.h"
#include "core/json_reader.h"
#include "tests/temp_dir.h"

namespace mel::app::testing {

namespace fs = std::filesystem;
using ::mel::testing::TempDir;

inline bool have_fmnist() {
  return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
}

inline std::string source_path(const std::string& rel) {
  return std::string(MEL_SOURCE_DIR) + "/" + rel;
}

inline std::string write_json(const TempDir& dir, const Json& j,
                              const std::string& name = "c.json") {
  const std::string p = dir / name;
  std::ofstream(p) << j.dump(2);
  return p;
}

inline std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `mel args...` in-process; returns the exit status and, when asked, what went to stderr.
inline int run_mel(std::vector<std::string> args, std::string* err = nullptr) {
  args.insert(args.begin(), "mel");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStderr();
  const int rc = run_cli(static_cast<int>(argv.size()), argv.data());
  const std::string e = ::testing::internal::GetCapturedStderr();
  if (err) *err = e;
  return rc;
}

}  // namespace mel::app::testing
