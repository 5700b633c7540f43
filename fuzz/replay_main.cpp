// Replay mode of a fuzz target (the normal build, no libFuzzer): runs LLVMFuzzerTestOneInput once
// on every file of the given folders (or on the given files), in name order, so ctest replays the
// seed corpus and every crash reproducer ever found. A reproducer whose root cause is still open
// elsewhere is listed in fuzz/known_open.txt ("<target>/<file>  reason") and skipped, by name.
//
//   fuzz_replay_<name> [--target NAME --known-open FILE] PATH...
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

// "<target>/<file>" entries (the first word of each line; '#' starts a comment).
std::set<std::string> read_known_open(const std::string& path) {
  std::set<std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    std::string first;
    if (words >> first) out.insert(first);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string target;
  std::set<std::string> known_open;
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--target" && i + 1 < argc) {
      target = argv[++i];
    } else if (a == "--known-open" && i + 1 < argc) {
      known_open = read_known_open(argv[++i]);
    } else if (fs::is_directory(a)) {
      std::vector<fs::path> in_dir;
      for (const auto& e : fs::directory_iterator(a)) {
        const std::string name = e.path().filename().string();
        if (e.is_regular_file() && name != "README.md" && name[0] != '.') {
          in_dir.push_back(e.path());
        }
      }
      std::sort(in_dir.begin(), in_dir.end());
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else if (fs::is_regular_file(a)) {
      files.emplace_back(a);
    } else if (fs::exists(a)) {
      std::fprintf(stderr, "replay: '%s' is neither a file nor a folder\n", a.c_str());
      return 2;
    }  // a missing folder (no crash found yet) replays nothing
  }
  int ran = 0, skipped = 0;
  for (const fs::path& f : files) {
    const std::string key = target + "/" + f.filename().string();
    if (known_open.count(key)) {
      std::printf("replay: skipping %s (listed in known_open.txt: root cause still open)\n",
                  key.c_str());
      ++skipped;
      continue;
    }
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
    std::printf("replay: %s (%zu bytes)\n", f.string().c_str(), bytes.size());
    std::fflush(stdout);
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ++ran;
  }
  std::printf("replay: %d input(s) ran without a crash, %d skipped\n", ran, skipped);
  return 0;
}
