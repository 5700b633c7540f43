#include "core/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "core/json_reader.h"
#include "kernels/strided.h"

namespace mel {

// Tensor bytes are written as they lie in memory, which the format defines as little-endian.
static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

namespace {

using nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";
constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as the reference implementation
constexpr int kMaxHeaderDepth = 64;

// A value or a text as a message quotes it: at most 80 characters.
std::string excerpt(const std::string& text, size_t max_chars = 80) {
  return text_excerpt(text, max_chars);
}
std::string excerpt(const json& value) {
  return text_excerpt(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

const char* st_dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "F32";
    case DType::f64:
      return "F64";
    case DType::bf16:
      return "BF16";
    case DType::f16:
      return "F16";
    case DType::i32:
      return "I32";
    case DType::i64:
      return "I64";
    case DType::u8:
      return "U8";
  }
  fail("save_safetensors: unknown dtype code {}", static_cast<int>(t));
}

bool st_parse_dtype(const std::string& s, DType& out) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F32", DType::f32}, {"F64", DType::f64}, {"BF16", DType::bf16}, {"F16", DType::f16},
      {"I32", DType::i32}, {"I64", DType::i64}, {"U8", DType::u8}};
  for (const auto& [name, t] : kNames) {
    if (s == name) {
      out = t;
      return true;
    }
  }
  return false;
}

// Closes the FILE on every path out of the reader and the writer.
struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

std::string errno_str() {
  return std::strerror(errno);
}

// ---- writing ---------------------------------------------------------------------------------

struct PendingTensor {
  const std::string* name;
  Tensor data;  // contiguous CPU
};

void write_all(FILE* f, const void* p, size_t n, const std::string& tmp) {
  if (n == 0) return;
  if (std::fwrite(p, 1, n, f) != n) {
    fail("save_safetensors: writing '{}' failed: {}", tmp, errno_str());
  }
}

// Makes the rename itself durable; failure here only weakens crash safety, so it is not an error.
void sync_parent_dir(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// ---- reading ---------------------------------------------------------------------------------

bool get_u64(const json& j, uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(j.get<int64_t>());
    return true;
  }
  return false;
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& path, const std::string& name, const json& j) {
  const std::string shown = excerpt(name);  // names come from the file: quote at most 80 chars
  MEL_CHECK(j.is_object(), "load_safetensors: '{}': header entry '{}' is not a JSON object", path,
            shown);
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    MEL_CHECK(j.contains(key), "load_safetensors: '{}': tensor '{}' has no \"{}\" field", path,
              shown, key);
  }
  Entry e;
  e.name = name;
  const json& jd = j.at("dtype");
  MEL_CHECK(jd.is_string(), "load_safetensors: '{}': tensor '{}' has a non-string dtype {}", path,
            shown, excerpt(jd));
  const std::string ds = jd.get<std::string>();
  MEL_CHECK(st_parse_dtype(ds, e.dtype),
            "load_safetensors: '{}': tensor '{}' has unknown or unsupported dtype '{}' (supported: "
            "F32, F64, BF16, F16, I32, I64, U8)",
            path, shown, excerpt(ds));

  const json& js = j.at("shape");
  MEL_CHECK(js.is_array(), "load_safetensors: '{}': tensor '{}' has a shape that is not an array",
            path, shown);
  MEL_CHECK(js.size() <= static_cast<size_t>(kernels::kMaxDims),
            "load_safetensors: '{}': tensor '{}' has a shape of {} dimensions (at most {} are "
            "supported)",
            path, shown, js.size(), kernels::kMaxDims);
  // numel: the element count; span: the product of the sizes with 0 counted as 1, which bounds
  // the strides of the tensor even when it is empty. Both must stay addressable (2^62 bytes).
  constexpr uint64_t kMaxBytes = uint64_t{1} << 62;
  const uint64_t esize = dtype_size(e.dtype);
  uint64_t numel = 1, span = esize;
  bool too_large = false;
  for (const json& d : js) {
    uint64_t v = 0;
    MEL_CHECK(get_u64(d, v) && v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
              "load_safetensors: '{}': tensor '{}' has an invalid shape {} (expected non-negative "
              "integers)",
              path, shown, excerpt(js));
    e.shape.push_back(static_cast<int64_t>(v));
    const uint64_t f = std::max<uint64_t>(v, 1);
    if (span > kMaxBytes / f) too_large = true;
    if (!too_large) {
      span *= f;
      numel *= v;
    }
  }
  MEL_CHECK(!too_large,
            "load_safetensors: '{}': tensor '{}' has a shape {} too large to address (more than "
            "2^62 bytes)",
            path, shown, excerpt(js));
  const uint64_t nbytes = numel * esize;

  const json& jo = j.at("data_offsets");
  MEL_CHECK(jo.is_array() && jo.size() == 2 && get_u64(jo[0], e.begin) && get_u64(jo[1], e.end),
            "load_safetensors: '{}': tensor '{}' has invalid data_offsets {} (expected [begin, "
            "end] with non-negative integers)",
            path, shown, excerpt(jo));
  MEL_CHECK(e.begin <= e.end,
            "load_safetensors: '{}': tensor '{}' has data_offsets [{}, {}] out of range (begin > "
            "end)",
            path, shown, e.begin, e.end);
  MEL_CHECK(e.end - e.begin == nbytes,
            "load_safetensors: '{}': tensor '{}' with shape {} and dtype {} needs {} bytes but its "
            "data_offsets [{}, {}] span {} (shape and offsets are inconsistent)",
            path, shown, excerpt(js), ds, nbytes, e.begin, e.end, e.end - e.begin);
  return e;
}

// Where the bytes come from: a file (read piece by piece, never whole) or memory.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Bytes [offset, offset + n) into dst; the caller has checked that they lie inside the source.
  virtual void read(uint64_t offset, void* dst, uint64_t n, const char* what) = 0;
};

class FileSource : public ByteSource {
 public:
  FileSource(FILE* f, const std::string& path) : f_(f), path_(path) {}
  void read(uint64_t offset, void* dst, uint64_t n, const char* what) override {
    MEL_CHECK(offset <= static_cast<uint64_t>(std::numeric_limits<long>::max()) &&
                  std::fseek(f_, static_cast<long>(offset), SEEK_SET) == 0,
              "load_safetensors: cannot seek in '{}': {}", path_, errno_str());
    MEL_CHECK(std::fread(dst, 1, n, f_) == n,
              "load_safetensors: '{}': reading {} failed (file truncated while reading?)", path_,
              what);
  }

 private:
  FILE* f_;
  const std::string& path_;
};

class MemorySource : public ByteSource {
 public:
  explicit MemorySource(const void* data) : data_(static_cast<const uint8_t*>(data)) {}
  void read(uint64_t offset, void* dst, uint64_t n, const char*) override {
    if (n > 0) std::memcpy(dst, data_ + offset, n);
  }

 private:
  const uint8_t* data_;
};

// The file opened at its start, and its size in bytes.
FilePtr open_for_reading(const std::string& path, uint64_t& size) {
  std::error_code ec;
  MEL_CHECK(!std::filesystem::is_directory(path, ec),
            "load_safetensors: '{}' is a directory, not a safetensors file", path);
  FilePtr f(std::fopen(path.c_str(), "rb"));
  MEL_CHECK(f, "load_safetensors: cannot open '{}': {}", path, errno_str());
  MEL_CHECK(std::fseek(f.get(), 0, SEEK_END) == 0, "load_safetensors: cannot seek in '{}': {}",
            path, errno_str());
  const long size_l = std::ftell(f.get());
  MEL_CHECK(size_l >= 0, "load_safetensors: cannot tell the size of '{}': {}", path, errno_str());
  size = static_cast<uint64_t>(size_l);
  std::rewind(f.get());
  return f;
}

// The JSON header of a file of `size` bytes; header_len: its length.
json read_header(const std::string& path, ByteSource& src, uint64_t size, uint64_t& header_len) {
  MEL_CHECK(size >= 8,
            "load_safetensors: '{}' is {} bytes long, shorter than the 8-byte header length (not "
            "a safetensors file, or truncated)",
            path, size);
  header_len = 0;
  src.read(0, &header_len, 8, "the header length");
  MEL_CHECK(header_len <= size - 8,
            "load_safetensors: '{}': header length {} runs beyond the end of the file ({} bytes; "
            "truncated, or not a safetensors file)",
            path, header_len, size);
  // The reference implementation's limit: a header is metadata, not data.
  MEL_CHECK(header_len <= kMaxHeaderBytes,
            "load_safetensors: '{}': header length {} is more than the {} bytes a header may have",
            path, header_len, kMaxHeaderBytes);
  std::string text(header_len, '\0');
  src.read(8, text.data(), header_len, "the header");
  // Nesting depth outside strings: a valid header is two levels deep (three with shapes).
  MEL_CHECK(find_nesting_excess(text, kMaxHeaderDepth).line == 0,
            "load_safetensors: '{}': the header nests deeper than {} levels (not a safetensors "
            "header)",
            path, kMaxHeaderDepth);

  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    fail("load_safetensors: '{}': the header is not valid JSON: {}", path, excerpt(e.what(), 200));
  }
  MEL_CHECK(header.is_object(), "load_safetensors: '{}': the header is JSON but not an object",
            path);
  return header;
}

// The header's tensor entries, in header order; its "__metadata__" strings go to `metadata`.
std::vector<Entry> parse_header(const std::string& path, const json& header,
                                std::map<std::string, std::string>& metadata) {
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      MEL_CHECK(value.is_object(), "load_safetensors: '{}': \"__metadata__\" is not an object",
                path);
      for (const auto& [mk, mv] : value.items()) {
        MEL_CHECK(mv.is_string(),
                  "load_safetensors: '{}': metadata entry '{}' is {} (only strings are allowed)",
                  path, excerpt(mk), excerpt(mv));
        metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, key, value));
  }
  return entries;
}

// Sorts the entries by offset and checks that they tile the data section of `data_size` bytes
// exactly: the reference reader accepts nothing else.
void check_tiling(const std::string& path, std::vector<Entry>& entries, uint64_t data_size) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    MEL_CHECK(e.end <= data_size,
              "load_safetensors: '{}': tensor '{}' data_offsets [{}, {}] run past the end of the "
              "data section ({} bytes): the file is truncated or the offsets are out of range",
              path, excerpt(e.name), e.begin, e.end, data_size);
    MEL_CHECK(e.begin >= expect,
              "load_safetensors: '{}': tensor '{}' data_offsets [{}, {}] overlap tensor '{}' [{}, "
              "{}]",
              path, excerpt(e.name), e.begin, e.end, excerpt(prev ? prev->name : ""),
              prev ? prev->begin : 0, prev ? prev->end : 0);
    MEL_CHECK(e.begin == expect,
              "load_safetensors: '{}': bytes [{}, {}) of the data section belong to no tensor "
              "(tensor '{}' starts at {}); offsets out of range",
              path, expect, e.begin, excerpt(e.name), e.begin);
    expect = e.end;
    prev = &e;
  }
  MEL_CHECK(expect == data_size,
            "load_safetensors: '{}': the data section has {} bytes but the tensors cover {} (data "
            "section size mismatch)",
            path, data_size, expect);
}

}  // namespace

const Tensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return &t;
  }
  return nullptr;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  std::vector<PendingTensor> pending;
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    MEL_CHECK(name != kMetadataKey,
              "save_safetensors: '{}': \"{}\" is reserved for metadata and cannot name a tensor",
              path, name);
    MEL_CHECK(seen.insert(name).second, "save_safetensors: '{}': duplicate tensor name '{}'", path,
              name);
    MEL_CHECK(t.defined(), "save_safetensors: '{}': tensor '{}' is undefined", path, name);
    // detach(): a checkpoint copy must not join the autograd graph of a parameter. GPU tensors
    // are copied to the host here (one read-back per tensor).
    Tensor c = t.detach().to(Device::cpu()).contiguous();
    const uint64_t n = c.nbytes();
    header[name] = {{"dtype", st_dtype_name(c.dtype())},
                    {"shape", c.shape()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    pending.push_back({&name, std::move(c)});
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    fail(
        "save_safetensors: '{}': cannot encode the header (names and metadata must be valid "
        "UTF-8): {}",
        path, e.what());
  }
  // The data section then starts 8-aligned, as the reference implementation writes it.
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_len = text.size();

  const std::string tmp = path + ".tmp";
  {
    FilePtr f(std::fopen(tmp.c_str(), "wb"));
    MEL_CHECK(f, "save_safetensors: cannot create '{}': {}", tmp, errno_str());
    try {
      write_all(f.get(), &header_len, 8, tmp);
      write_all(f.get(), text.data(), text.size(), tmp);
      for (const PendingTensor& p : pending) {
        write_all(f.get(), p.data.data_ptr(), p.data.nbytes(), tmp);
      }
      MEL_CHECK(std::fflush(f.get()) == 0, "save_safetensors: writing '{}' failed: {}", tmp,
                errno_str());
      MEL_CHECK(::fsync(::fileno(f.get())) == 0, "save_safetensors: syncing '{}' failed: {}", tmp,
                errno_str());
      FILE* raw = f.release();
      MEL_CHECK(std::fclose(raw) == 0, "save_safetensors: closing '{}' failed: {}", tmp,
                errno_str());
    } catch (...) {
      f.reset();
      std::remove(tmp.c_str());
      throw;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_str();
    std::remove(tmp.c_str());
    fail("save_safetensors: cannot rename '{}' to '{}': {}", tmp, path, why);
  }
  sync_parent_dir(path);
}

namespace {

// The whole reader over a source of `size` bytes; `path` names it in errors.
SafetensorsFile read_safetensors(const std::string& path, ByteSource& src, uint64_t size) {
  uint64_t header_len = 0;
  const json header = read_header(path, src, size, header_len);
  SafetensorsFile out;
  std::vector<Entry> entries = parse_header(path, header, out.metadata);
  check_tiling(path, entries, size - 8 - header_len);
  for (const Entry& e : entries) {
    Tensor t = empty(e.shape, e.dtype);
    const uint64_t n = e.end - e.begin;
    if (n > 0) {
      const std::string what = fmt::format("tensor '{}'", excerpt(e.name));
      src.read(8 + header_len + e.begin, t.data_ptr(), n, what.c_str());
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) {
  uint64_t size = 0;
  FilePtr f = open_for_reading(path, size);
  FileSource src(f.get(), path);
  return read_safetensors(path, src, size);
}

SafetensorsFile parse_safetensors(const void* data, size_t size, const std::string& source) {
  MemorySource src(data);
  return read_safetensors(source, src, size);
}

}  // namespace mel
