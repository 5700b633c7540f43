#include "train/checkpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include "core/json_reader.h"
#include "core/safetensors.h"
#include "train/files.h"

namespace mel::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kStaged = ".next";

// ---- XXH64 ----------------------------------------------------------------------------------

constexpr uint64_t kP1 = 11400714785074694791ULL, kP2 = 14029467366897019727ULL,
                   kP3 = 1609587929392839161ULL, kP4 = 9650029242287828579ULL,
                   kP5 = 2870177450012600261ULL;

uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}
uint64_t read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // little-endian hosts only, as the safetensors code
}
uint32_t read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t xxh_round(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = rotl(acc, 31);
  return acc * kP1;
}
uint64_t xxh_merge(uint64_t acc, uint64_t val) {
  acc ^= xxh_round(0, val);
  return acc * kP1 + kP4;
}

// Streaming XXH64 with seed 0.
class Xxh64 {
 public:
  void update(const unsigned char* p, size_t n) {
    total_ += n;
    if (buffered_ + n < 32) {
      std::memcpy(buf_ + buffered_, p, n);
      buffered_ += n;
      return;
    }
    if (buffered_ > 0) {
      const size_t take = 32 - buffered_;
      std::memcpy(buf_ + buffered_, p, take);
      stripe(buf_);
      p += take;
      n -= take;
      buffered_ = 0;
    }
    while (n >= 32) {
      stripe(p);
      p += 32;
      n -= 32;
    }
    std::memcpy(buf_, p, n);
    buffered_ = n;
  }
  uint64_t digest() const {
    uint64_t h;
    if (total_ >= 32) {
      h = rotl(v_[0], 1) + rotl(v_[1], 7) + rotl(v_[2], 12) + rotl(v_[3], 18);
      for (uint64_t v : v_) h = xxh_merge(h, v);
    } else {
      h = kP5;
    }
    h += total_;
    const unsigned char* p = buf_;
    size_t n = buffered_;
    while (n >= 8) {
      h ^= xxh_round(0, read64(p));
      h = rotl(h, 27) * kP1 + kP4;
      p += 8;
      n -= 8;
    }
    if (n >= 4) {
      h ^= static_cast<uint64_t>(read32(p)) * kP1;
      h = rotl(h, 23) * kP2 + kP3;
      p += 4;
      n -= 4;
    }
    while (n > 0) {
      h ^= (*p) * kP5;
      h = rotl(h, 11) * kP1;
      ++p;
      --n;
    }
    h ^= h >> 33;
    h *= kP2;
    h ^= h >> 29;
    h *= kP3;
    h ^= h >> 32;
    return h;
  }

 private:
  void stripe(const unsigned char* p) {
    for (int i = 0; i < 4; ++i) v_[i] = xxh_round(v_[i], read64(p + 8 * i));
  }
  uint64_t v_[4] = {kP1 + kP2, kP2, 0, 0 - kP1};
  unsigned char buf_[32] = {};
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

// ---- what a file is -------------------------------------------------------------------------

struct FileFacts {
  bool exists = false;
  uint64_t bytes = 0;
  std::string xxh64;
};

FileFacts facts_of(const std::string& path) {
  FileFacts f;
  std::ifstream in(path, std::ios::binary);
  if (!in) return f;
  f.exists = true;
  Xxh64 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<size_t>(in.gcount());
    if (n == 0) break;
    h.update(reinterpret_cast<const unsigned char*>(buf.data()), n);
    f.bytes += n;
  }
  f.xxh64 = fmt::format("{:016x}", h.digest());
  return f;
}

// ---- metadata -------------------------------------------------------------------------------

std::map<std::string, std::string> metadata_of(const CheckpointInfo& info) {
  return {{"format", kCheckpointFormat},
          {"config", info.config_json},
          {"epoch", std::to_string(info.epoch)},
          {"step", std::to_string(info.step)}};
}

CheckpointInfo info_from(const SafetensorsFile& f, const std::string& path) {
  auto get = [&](const char* key) {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) {
      fail("{}: not a mel checkpoint (its metadata has no '{}' entry)", path, key);
    }
    return it->second;
  };
  const std::string format = get("format");
  MEL_CHECK(format == kCheckpointFormat, "{}: checkpoint format '{}' is not '{}'", path, format,
            kCheckpointFormat);
  CheckpointInfo info;
  info.config_json = get("config");
  try {
    info.epoch = std::stoll(get("epoch"));
    info.step = std::stoll(get("step"));
  } catch (const std::logic_error&) {
    fail("{}: checkpoint metadata 'epoch' / 'step' are not integers", path);
  }
  return info;
}

// ---- the commit record ----------------------------------------------------------------------

struct Record {
  int64_t epoch = 0, step = 0;
  std::map<std::string, FileFacts> files;
};

bool exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

std::string record_path(const std::string& dir) {
  return dir + "/" + kCheckpointRecord;
}

std::optional<Record> read_record(const std::string& dir) {
  const std::string path = record_path(dir);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (exists(path)) fail("{}: cannot read the checkpoint record", path);
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const Json j = Json::parse(ss.str(), nullptr, false);
  auto bad = [&](const std::string& why) {
    fail("{}: not a valid checkpoint record ({}); the run folder's checkpoint cannot be trusted",
         path, why);
  };
  if (j.is_discarded() || !j.is_object()) bad("not a JSON object");
  if (j.value("format", std::string()) != kCheckpointFormat) {
    bad(fmt::format("its format is not '{}'", kCheckpointFormat));
  }
  Record r;
  if (!j.contains("epoch") || !j["epoch"].is_number_integer() || !j.contains("step") ||
      !j["step"].is_number_integer()) {
    bad("no integer 'epoch' and 'step'");
  }
  r.epoch = j["epoch"].get<int64_t>();
  r.step = j["step"].get<int64_t>();
  if (!j.contains("files") || !j["files"].is_object() || !j["files"].contains(kModelFile)) {
    bad(fmt::format("no 'files' entry for {}", kModelFile));
  }
  for (auto it = j["files"].begin(); it != j["files"].end(); ++it) {
    const Json& e = it.value();
    if (it.key().find('/') != std::string::npos || it.key().starts_with(".") || !e.is_object() ||
        !e.contains("bytes") || !e["bytes"].is_number_unsigned() || !e.contains("xxh64") ||
        !e["xxh64"].is_string()) {
      bad(fmt::format("the entry of '{}' is not {{\"bytes\": N, \"xxh64\": \"...\"}}", it.key()));
    }
    r.files[it.key()] = {true, e["bytes"].get<uint64_t>(), e["xxh64"].get<std::string>()};
  }
  return r;
}

std::string describe(const std::string& dir, const Record& r) {
  return fmt::format("{} (epoch {}, step {})", record_path(dir), r.epoch, r.step);
}

// The file holding `name`'s committed contents: dir/name, or dir/name.next when a crash fell
// between the commit and the rename (tried again last: the rename may happen while we look).
std::string committed_file(const std::string& dir, const Record& r, const std::string& name) {
  auto it = r.files.find(name);
  if (it == r.files.end()) {
    fail("{}: {} names no {}; the checkpoint cannot be used", dir, describe(dir, r), name);
  }
  const FileFacts& want = it->second;
  const std::string path = dir + "/" + name, staged = path + kStaged;
  FileFacts found;
  for (const std::string& p : {path, staged, path}) {
    const FileFacts f = facts_of(p);
    if (f.exists && f.bytes == want.bytes && f.xxh64 == want.xxh64) return p;
    if (p == path) found = f;
  }
  std::string what;
  if (!found.exists) {
    what = fmt::format("{} is missing", path);
  } else if (found.bytes != want.bytes) {
    what = fmt::format("{} has {} bytes but the record says {} ({})", path, found.bytes, want.bytes,
                       found.bytes < want.bytes ? "truncated" : "a file of another checkpoint");
  } else {
    what = fmt::format(
        "{} has other contents than the record says (xxh64 {}, recorded {}): a file "
        "of another epoch or a damaged copy",
        path, found.xxh64, want.xxh64);
  }
  fail(
      "{}: the checkpoint's files do not belong together: {}; {} is the record of the last "
      "complete checkpoint. Restore the file, or start the run again with --overwrite",
      dir, what, describe(dir, r));
}

// Reads `file` (committed under `record` when given) and checks its metadata against the record.
SafetensorsFile load_checked(const std::string& dir, const std::optional<Record>& record,
                             const std::string& file, CheckpointInfo& info) {
  SafetensorsFile contents = load_safetensors(file);
  info = info_from(contents, file);
  if (record && (info.epoch != record->epoch || info.step != record->step)) {
    fail("{}: {} is at epoch {} (step {}) but {}: the files do not belong together", dir, file,
         info.epoch, info.step, describe(dir, *record));
  }
  return contents;
}

void warn_unrecorded(const std::string& dir) {
  static std::mutex m;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> guard(m);
  if (!warned.insert(dir).second) return;
  fmt::print(stderr,
             "warning: {} has no {} (a run folder of an older mel): its files are checked only "
             "for matching epochs, not against a commit record\n",
             dir, kCheckpointRecord);
}

// The test hook of save_checkpoint: MEL_TEST_KILL_AT=POINT[@EPOCH].
void maybe_killed_at(const char* point, int64_t epoch) {
  const char* v = std::getenv("MEL_TEST_KILL_AT");
  if (!v) return;
  const std::string s = v;
  const size_t at = s.find('@');
  if (s.substr(0, at) != point) return;
  if (at != std::string::npos && s.substr(at + 1) != std::to_string(epoch)) return;
  std::fflush(stdout);
  std::fflush(stderr);
  std::raise(SIGKILL);
}

void remove_file(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) fail("{}: cannot remove: {}", path, ec.message());
}

void rename_file(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) fail("{}: cannot rename to {}: {}", from, to, ec.message());
}

// Temporary files of interrupted writes (NAME.tmp, NAME.tmp.PID.N) of the run files.
bool is_temporary(const std::string& name) {
  for (const char* base :
       {kModelFile, kOptimizerFile, kCheckpointRecord, "metrics.jsonl", "report.json"}) {
    if (!name.starts_with(base)) continue;
    const std::string rest = name.substr(std::strlen(base));
    if (rest.starts_with(".tmp") || rest.starts_with(".next.tmp")) return true;
  }
  return false;
}

void remove_temporaries(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (is_temporary(name)) remove_file(e.path().string());
  }
}

}  // namespace

std::string xxh64_hex(const void* data, size_t size) {
  Xxh64 h;
  h.update(static_cast<const unsigned char*>(data), size);
  return fmt::format("{:016x}", h.digest());
}

std::string file_xxh64_hex(const std::string& path) {
  const FileFacts f = facts_of(path);
  MEL_CHECK(f.exists, "{}: cannot read", path);
  return f.xxh64;
}

std::string model_checkpoint_path(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return path + "/" + kModelFile;
  return path;
}

void save_checkpoint(const std::string& dir, const nn::Module& model,
                     const nn::NamedTensors* optimizer_state, const CheckpointInfo& info) {
  const auto meta = metadata_of(info);
  const int64_t epoch = info.epoch;
  std::vector<std::string> names;
  if (optimizer_state) {
    save_safetensors(dir + "/" + kOptimizerFile + kStaged, *optimizer_state, meta);
    names.push_back(kOptimizerFile);
    maybe_killed_at("after_optimizer_write", epoch);
  }
  save_safetensors(dir + "/" + kModelFile + kStaged, model.state_dict(), meta);
  names.push_back(kModelFile);
  maybe_killed_at("after_model_write", epoch);
  Json files = Json::object();
  for (const std::string& n : names) {
    const FileFacts f = facts_of(dir + "/" + n + kStaged);
    MEL_CHECK(f.exists, "{}/{}{}: cannot read back the file just written", dir, n, kStaged);
    files[n] = {{"bytes", f.bytes}, {"xxh64", f.xxh64}};
  }
  const Json record = {
      {"format", kCheckpointFormat}, {"epoch", info.epoch}, {"step", info.step}, {"files", files}};
  write_file_atomic(record_path(dir), record.dump(2) + "\n");  // the commit point
  maybe_killed_at("after_commit", epoch);
  for (const std::string& n : names) {
    rename_file(dir + "/" + n + kStaged, dir + "/" + n);
    maybe_killed_at(n == kModelFile ? "after_model_rename" : "after_optimizer_rename", epoch);
  }
  if (!optimizer_state) remove_file(dir + "/" + kOptimizerFile);  // not part of this checkpoint
  sync_dir(dir);
}

bool has_checkpoint(const std::string& dir) {
  return exists(record_path(dir)) || exists(dir + "/" + kModelFile);
}

void recover_checkpoint(const std::string& dir) {
  remove_temporaries(dir);
  const std::optional<Record> record = read_record(dir);
  for (const char* name : {kOptimizerFile, kModelFile}) {
    const std::string path = dir + "/" + name, staged = path + kStaged;
    if (!exists(staged)) continue;
    bool keep = false;
    if (record) {
      auto it = record->files.find(name);
      const FileFacts want = it != record->files.end() ? it->second : FileFacts{};
      const FileFacts have = facts_of(path);
      const FileFacts next = facts_of(staged);
      keep = it != record->files.end() && !(have.bytes == want.bytes && have.xxh64 == want.xxh64) &&
             next.bytes == want.bytes && next.xxh64 == want.xxh64;
    }
    if (keep) {
      rename_file(staged, path);  // committed before the crash: roll forward
    } else {
      remove_file(staged);  // written before a crash that came before its commit
    }
  }
  sync_dir(dir);
}

void remove_run_files(const std::string& dir) {
  remove_temporaries(dir);
  for (const char* name :
       {kCheckpointRecord, kModelFile, kOptimizerFile, "metrics.jsonl", "report.json"}) {
    remove_file(dir + "/" + name);
  }
  remove_file(dir + "/" + kModelFile + kStaged);
  remove_file(dir + "/" + kOptimizerFile + kStaged);
  sync_dir(dir);
}

Checkpoint read_checkpoint(const std::string& path) {
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  const fs::path p(path);
  const std::string dir = is_dir ? path : p.parent_path().string();
  const std::string name = is_dir ? kModelFile : p.filename().string();
  std::optional<Record> record;
  if (is_dir || name == kModelFile) record = read_record(dir.empty() ? "." : dir);
  Checkpoint c;
  if (record) {
    c.file = committed_file(dir, *record, name);
  } else {
    c.file = model_checkpoint_path(path);
    if (is_dir) {
      if (!exists(c.file)) {
        fail("{}: no checkpoint here (neither {} nor {}){}", path, kCheckpointRecord, kModelFile,
             exists(c.file + kStaged) ? "; the run stopped before its first checkpoint was complete"
                                      : "");
      }
      warn_unrecorded(path);
    }
  }
  c.contents = load_checked(dir, record, c.file, c.info);
  return c;
}

namespace {

// The first non-finite element of a floating tensor: its index and value, or -1.
std::pair<int64_t, double> first_non_finite(const Tensor& t, int64_t& count) {
  count = 0;
  std::pair<int64_t, double> first{-1, 0.0};
  auto scan = [&](auto* data) {
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(data[i]);
      if (!std::isfinite(v)) {
        if (count++ == 0) first = {i, v};
      }
    }
  };
  if (t.dtype() == DType::f64) {
    const Tensor c = t.contiguous();
    scan(c.data<double>());
  } else {
    const Tensor c = t.to(DType::f32).contiguous();
    scan(c.data<float>());
  }
  return first;
}

// Every tensor of `found` against the one of the same name in `expected`: the same dtype, and
// finite values (floating tensors). Names only on one side and shapes are left to the loader's
// own check (it names every missing, unexpected and mis-shaped tensor).
void check_tensors(const std::string& file, const nn::NamedTensors& expected,
                   const nn::NamedTensors& found, const char* owner) {
  std::map<std::string, const Tensor*> want;
  for (const auto& [n, t] : expected) want[n] = &t;
  std::vector<std::string> wrong, non_finite;
  for (const auto& [n, t] : found) {
    auto it = want.find(n);
    if (it == want.end()) continue;
    const Tensor& e = *it->second;
    if (t.dtype() != e.dtype()) {
      wrong.push_back(fmt::format("'{}' is {} {} in the file but {} {} in the {}", n,
                                  dtype_name(t.dtype()), shape_str(t.shape()),
                                  dtype_name(e.dtype()), shape_str(e.shape()), owner));
      continue;
    }
    if (t.shape() != e.shape()) continue;  // the loader names every mis-shaped tensor
    if (!is_floating(t.dtype()) || t.numel() == 0) continue;
    int64_t count = 0;
    const auto [index, value] =
        first_non_finite(t.device().is_cuda() ? t.to(Device::cpu()) : t, count);
    if (count > 0) {
      non_finite.push_back(fmt::format("'{}' ({} of {} values, the first {} at index {})", n, count,
                                       t.numel(), value, index));
    }
  }
  if (!wrong.empty()) {
    fail("{}: wrong dtype (nothing is converted): {}", file, fmt::join(wrong, "; "));
  }
  if (!non_finite.empty()) {
    fail(
        "{}: non-finite values (NaN or infinity) in {}; refusing to load them (the run diverged "
        "before this checkpoint, or the file is damaged)",
        file, fmt::join(non_finite, ", "));
  }
}

}  // namespace

void load_model_checkpoint(const Checkpoint& checkpoint, nn::Module& model) {
  check_tensors(checkpoint.file, model.state_dict(), checkpoint.contents.tensors, "model");
  try {
    model.load_state_dict(checkpoint.contents.tensors);
  } catch (const Error& e) {
    fail("{}: {}", checkpoint.file, e.what());
  }
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  return read_checkpoint(path).info;
}

void load_model_checkpoint(const std::string& path, nn::Module& model) {
  load_model_checkpoint(read_checkpoint(path), model);
}

nn::NamedTensors read_optimizer_checkpoint(const std::string& dir, const CheckpointInfo& model) {
  const std::optional<Record> record = read_record(dir);
  const std::string file =
      record ? committed_file(dir, *record, kOptimizerFile) : dir + "/" + kOptimizerFile;
  CheckpointInfo info;
  SafetensorsFile f = load_checked(dir, record, file, info);
  if (info.epoch != model.epoch || info.step != model.step) {
    fail(
        "{}: {} is at epoch {} (step {}) but the model checkpoint is at epoch {} (step {}): the "
        "model and optimizer files are from different epochs; the run cannot be resumed as it is",
        dir, file, info.epoch, info.step, model.epoch, model.step);
  }
  return std::move(f.tensors);
}

void load_optimizer_state(const std::string& dir, nn::Optimizer& opt,
                          const nn::NamedTensors& state) {
  const std::string file = dir + "/" + kOptimizerFile;
  check_tensors(file, opt.state(), state, "optimizer");
  try {
    opt.load_state(state);
  } catch (const Error& e) {
    fail("{}: {}", file, e.what());
  }
}

}  // namespace mel::train
