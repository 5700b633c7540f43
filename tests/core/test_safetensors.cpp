#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "gradcheck.h"

namespace mel {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A fresh directory per test, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            fmt::format("mel_st_{}_{}_{}", info->name(), ::getpid(), std::random_device{}());
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  size_t count() const {
    return static_cast<size_t>(std::distance(fs::directory_iterator(path_), {}));
  }

 private:
  fs::path path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A raw safetensors file from a header text and a data section (the header is not padded, which
// the format allows).
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

// A tensor of `shape` and `dtype` whose bytes are the given pattern (repeated), set bit by bit so
// NaN payloads and signed zeros survive.
Tensor from_bytes(const Shape& shape, DType dtype, const std::vector<uint8_t>& pattern) {
  Tensor t = empty(shape, dtype);
  auto* p = static_cast<uint8_t*>(t.data_ptr());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = pattern[i % pattern.size()];
  return t;
}

std::string bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

template <class T>
std::vector<uint8_t> pack(std::initializer_list<T> values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

TEST(Safetensors, RoundTripIsBitExactForEveryDtype) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> ts;
  // f32: NaN with a payload, a signalling NaN, -0.0, infinity, a subnormal.
  ts.emplace_back("f32", from_bytes({2, 3}, DType::f32,
                                    pack<uint32_t>({0x7fc01234u, 0x7f800001u, 0x80000000u,
                                                    0x7f800000u, 0x00000001u, 0x3f800000u})));
  ts.emplace_back("f64", from_bytes({5}, DType::f64,
                                    pack<uint64_t>({0x7ff8000000abcdefull, 0x8000000000000000ull,
                                                    0xfff0000000000000ull, 0x0000000000000001ull,
                                                    0x400921fb54442d18ull})));
  ts.emplace_back("bf16",
                  from_bytes({3, 2}, DType::bf16,
                             pack<uint16_t>({0x7fc1, 0x8000, 0x3f80, 0xff80, 0x0001, 0x7f81})));
  ts.emplace_back(
      "f16",
      from_bytes({2, 2, 2}, DType::f16,
                 pack<uint16_t>({0x7e01, 0x8000, 0x3c00, 0xfc00, 0x0001, 0x7c01, 0x7bff, 0x0400})));
  ts.emplace_back("i32",
                  from_bytes({4}, DType::i32, pack<int32_t>({-2147483647 - 1, -1, 0, 2147483647})));
  ts.emplace_back("i64", from_bytes({3}, DType::i64, pack<int64_t>({INT64_MIN, -7, INT64_MAX})));
  ts.emplace_back("u8", from_bytes({7}, DType::u8, {0, 1, 127, 128, 200, 254, 255}));
  const std::string path = dir.file("all.safetensors");
  save_safetensors(path, ts);

  SafetensorsFile f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), ts.size());
  EXPECT_TRUE(f.metadata.empty());
  for (size_t i = 0; i < ts.size(); ++i) {
    // File order is the order given to save.
    EXPECT_EQ(f.tensors[i].first, ts[i].first);
    const Tensor& got = f.tensors[i].second;
    EXPECT_EQ(got.dtype(), ts[i].second.dtype()) << ts[i].first;
    EXPECT_EQ(got.shape(), ts[i].second.shape()) << ts[i].first;
    EXPECT_EQ(bytes_of(got), bytes_of(ts[i].second)) << ts[i].first;
  }
  ASSERT_NE(f.find("bf16"), nullptr);
  EXPECT_EQ(f.find("bf16")->dtype(), DType::bf16);
  EXPECT_EQ(f.find("nope"), nullptr);
}

TEST(Safetensors, NonContiguousScalarAndEmptyTensors) {
  TempDir dir;
  Tensor base =
      from_bytes({3, 4}, DType::f32, pack<float>({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  base.set({1, 2}, std::nan(""));
  Tensor transposed = base.t();             // [4, 3], strides [1, 4]
  Tensor stepped = base.slice(1, 0, 4, 2);  // [3, 2], strides [4, 2]
  Tensor expanded = tensor({1.5, -2.5}, {2, 1}, DType::f64).expand({2, 3});  // stride 0
  Tensor scalar = tensor({42.0}, {}, DType::i64);
  Tensor empty_rows = zeros({0, 3});
  Tensor leaf = tensor({1, 2}, {2});
  leaf.requires_grad_();
  ASSERT_FALSE(transposed.is_contiguous());
  const std::string path = dir.file("views.safetensors");
  save_safetensors(path, {{"transposed", transposed},
                          {"stepped", stepped},
                          {"expanded", expanded},
                          {"scalar", scalar},
                          {"empty", empty_rows},
                          {"leaf", leaf}});
  // Saving a parameter must not attach anything to its graph.
  EXPECT_TRUE(leaf.is_leaf());

  SafetensorsFile f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), 6u);
  EXPECT_EQ(bytes_of(*f.find("transposed")), bytes_of(transposed.contiguous()));
  EXPECT_EQ(f.find("transposed")->shape(), (Shape{4, 3}));
  EXPECT_TRUE(std::isnan(f.find("transposed")->at({2, 1})));
  EXPECT_EQ(f.find("transposed")->at({3, 2}), 12.0);
  EXPECT_EQ(bytes_of(*f.find("stepped")), bytes_of(stepped.contiguous()));
  EXPECT_EQ(f.find("expanded")->to_vector(),
            (std::vector<double>{1.5, 1.5, 1.5, -2.5, -2.5, -2.5}));
  EXPECT_EQ(f.find("scalar")->shape(), Shape{});
  EXPECT_EQ(f.find("scalar")->item(), 42.0);
  EXPECT_EQ(f.find("empty")->shape(), (Shape{0, 3}));
  EXPECT_FALSE(f.find("leaf")->requires_grad());

  // Gathering a view keeps NaN payloads (quiet and signalling) bit for bit.
  Tensor nans = from_bytes({2, 2}, DType::f32,
                           pack<uint32_t>({0x7fc01234u, 0x7f800001u, 0x3f800000u, 0x80000000u}));
  save_safetensors(path, {{"t", nans.t()}});
  const Tensor got = *load_safetensors(path).find("t");
  const auto* bits = static_cast<const uint32_t*>(got.data_ptr());
  EXPECT_EQ(bits[0], 0x7fc01234u);
  EXPECT_EQ(bits[1], 0x3f800000u);
  EXPECT_EQ(bits[2], 0x7f800001u);
  EXPECT_EQ(bits[3], 0x80000000u);
}

TEST(Safetensors, MetadataRoundTrip) {
  TempDir dir;
  const std::map<std::string, std::string> meta = {{"format", "mel"},
                                                   {"epoch", "12"},
                                                   {"config", "{\"lr\": 0.1}"},
                                                   {"empty", ""},
                                                   {"unicode", "\u00e9\u4e2d"}};
  const std::string path = dir.file("meta.safetensors");
  save_safetensors(path, {{"w", ones({2})}}, meta);
  SafetensorsFile f = load_safetensors(path);
  EXPECT_EQ(f.metadata, meta);
  // No tensors at all is a valid file too.
  save_safetensors(path, {}, {{"only", "metadata"}});
  f = load_safetensors(path);
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_EQ(f.metadata.at("only"), "metadata");
}

TEST(Safetensors, FileLayoutMatchesHandComputedBytes) {
  TempDir dir;
  const std::string path = dir.file("tiny.safetensors");
  save_safetensors(path, {{"a", from_bytes({2}, DType::u8, {1, 2})}});
  const std::string bytes = read_bytes(path);
  // {"a":{"data_offsets":[0,2],"dtype":"U8","shape":[2]}} is 53 bytes, padded with 3 spaces to 56.
  const std::string json_text = R"({"a":{"data_offsets":[0,2],"dtype":"U8","shape":[2]}})";
  ASSERT_EQ(json_text.size(), 53u);
  const std::string expected =
      std::string("\x38\0\0\0\0\0\0\0", 8) + json_text + "   " + "\x01\x02";
  EXPECT_EQ(bytes, expected);
  ASSERT_EQ(bytes.size(), 66u);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n, 56u);
  json h = json::parse(bytes.substr(8, n));
  EXPECT_EQ(h["a"]["dtype"], "U8");
  EXPECT_EQ(h["a"]["shape"], json::array({2}));
  EXPECT_EQ(h["a"]["data_offsets"], json::array({0, 2}));
  EXPECT_FALSE(h.contains("__metadata__"));

  // Two tensors and metadata: offsets follow the given order, the data section starts 8-aligned.
  save_safetensors(path, {{"z", from_bytes({3}, DType::i32, {9})}, {"b", zeros({1}, DType::f64)}},
                   {{"k", "v"}});
  const std::string b2 = read_bytes(path);
  std::memcpy(&n, b2.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  json h2 = json::parse(b2.substr(8, n));
  EXPECT_EQ(h2["z"]["data_offsets"], json::array({0, 12}));
  EXPECT_EQ(h2["z"]["dtype"], "I32");
  EXPECT_EQ(h2["b"]["data_offsets"], json::array({12, 20}));
  EXPECT_EQ(h2["b"]["dtype"], "F64");
  EXPECT_EQ(h2["__metadata__"]["k"], "v");
  EXPECT_EQ(b2.size(), 8 + n + 20);
}

TEST(Safetensors, DtypeNamesFollowTheSpec) {
  TempDir dir;
  const std::string path = dir.file("names.safetensors");
  const std::pair<DType, const char*> names[] = {
      {DType::f32, "F32"}, {DType::f64, "F64"}, {DType::bf16, "BF16"}, {DType::f16, "F16"},
      {DType::i32, "I32"}, {DType::i64, "I64"}, {DType::u8, "U8"}};
  for (const auto& [dt, name] : names) {
    save_safetensors(path, {{"t", zeros({1}, dt)}});
    const std::string b = read_bytes(path);
    uint64_t n = 0;
    std::memcpy(&n, b.data(), 8);
    EXPECT_EQ(json::parse(b.substr(8, n))["t"]["dtype"], name);
  }
}

TEST(Safetensors, SaveRejectsBadInputAndLeavesNoTemporaryFile) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  EXPECT_MEL_ERROR(save_safetensors(path, {{"w", ones({2})}, {"w", zeros({3})}}), "bad.safetensors",
                   "duplicate tensor name 'w'");
  EXPECT_MEL_ERROR(save_safetensors(path, {{"__metadata__", ones({2})}}), "reserved");
  EXPECT_MEL_ERROR(save_safetensors(path, {{"u", Tensor()}}), "tensor 'u' is undefined");
  EXPECT_MEL_ERROR(save_safetensors(dir.file("no/such/dir/x.safetensors"), {{"w", ones({1})}}),
                   "cannot create", "no/such/dir/x.safetensors.tmp");
  EXPECT_EQ(dir.count(), 0u);
}

TEST(Safetensors, ReplacesAnExistingFileAtomically) {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  save_safetensors(path, {{"w", full({4}, 1.0)}}, {{"step", "1"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  save_safetensors(path, {{"w", full({4}, 2.0)}, {"b", zeros({1})}}, {{"step", "2"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(dir.count(), 1u);
  SafetensorsFile f = load_safetensors(path);
  EXPECT_EQ(f.metadata.at("step"), "2");
  EXPECT_EQ(f.find("w")->to_vector(), (std::vector<double>(4, 2.0)));

  // A save that fails before the rename leaves the previous checkpoint untouched: here the
  // temporary path is taken by a directory, so the writer cannot create it.
  const std::string before = read_bytes(path);
  fs::create_directory(path + ".tmp");
  EXPECT_MEL_ERROR(save_safetensors(path, {{"w", full({4}, 3.0)}}), "cannot create",
                   "ckpt.safetensors.tmp");
  EXPECT_EQ(read_bytes(path), before);
  fs::remove(path + ".tmp");
  // A save rejected during validation does not touch it either.
  EXPECT_MEL_ERROR(save_safetensors(path, {{"w", ones({1})}, {"w", ones({1})}}), "duplicate");
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(dir.count(), 1u);
}

TEST(Safetensors, LoadRejectsMalformedFiles) {
  TempDir dir;
  const std::string p = dir.file("broken.safetensors");
  auto load_bytes = [&](const std::string& bytes) {
    write_bytes(p, bytes);
    return load_safetensors(p);
  };
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  EXPECT_MEL_ERROR(load_safetensors(dir.file("missing.safetensors")), "cannot open",
                   "missing.safetensors", "No such file");
  EXPECT_MEL_ERROR(load_safetensors(dir.file("")), "is a directory");
  EXPECT_MEL_ERROR(load_bytes(""), "broken.safetensors", "0 bytes long",
                   "shorter than the 8-byte header length");
  EXPECT_MEL_ERROR(load_bytes(std::string("\x10\0\0", 3)), "broken.safetensors", "3 bytes long");
  {
    std::string b = make_file("{}", "");
    b[0] = 100;  // claims a 100-byte header in a 10-byte file
    EXPECT_MEL_ERROR(load_bytes(b), "broken.safetensors", "header length 100",
                     "beyond the end of the file (10 bytes");
    b[7] = '\xff';  // a length that would wrap around if added carelessly
    EXPECT_MEL_ERROR(load_bytes(b), "beyond the end of the file");
  }
  EXPECT_MEL_ERROR(load_bytes(make_file("{\"a\": [1, 2", "")), "broken.safetensors",
                   "not valid JSON");
  EXPECT_MEL_ERROR(load_bytes(make_file("[1, 2]", "")), "not an object");
  EXPECT_MEL_ERROR(
      load_bytes(make_file(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})",
                           std::string(2, '\0'))),
      "broken.safetensors", "tensor 'a'", "unsupported dtype 'F8_E4M3'");
  EXPECT_MEL_ERROR(load_bytes(make_file(R"({"a":{"dtype":"F32","shape":[2]}})", "")),
                   "tensor 'a' has no \"data_offsets\" field");
  EXPECT_MEL_ERROR(
      load_bytes(make_file(R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})",
                           std::string(8, '\0'))),
      "invalid shape [2,-1]");
  EXPECT_MEL_ERROR(
      load_bytes(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", "")),
      "invalid data_offsets [0]");
  // Shape and offsets disagree: 3 floats need 12 bytes, the offsets give 8.
  EXPECT_MEL_ERROR(load_bytes(make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                                        std::string(8, '\0'))),
                   "broken.safetensors", "tensor 'a'", "needs 12 bytes", "span 8", "inconsistent");
  EXPECT_MEL_ERROR(
      load_bytes(make_file(
          R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})",
          std::string(8, '\0'))),
      "too large");
  EXPECT_MEL_ERROR(
      load_bytes(make_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", "")),
      "out of range (begin > end)");
  // Overlap: b starts inside a.
  EXPECT_MEL_ERROR(
      load_bytes(
          make_file("{" + ok_entry + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    std::string(12, '\0'))),
      "broken.safetensors", "tensor 'b'", "overlap tensor 'a' [0, 8]");
  // Out of range: b points past the data section.
  EXPECT_MEL_ERROR(
      load_bytes(
          make_file("{" + ok_entry + R"(,"b":{"dtype":"U8","shape":[2],"data_offsets":[100,102]}})",
                    std::string(10, '\0'))),
      "tensor 'b' data_offsets [100, 102] run past the end of the data section (10 bytes)",
      "out of range");
  // A hole between tensors.
  EXPECT_MEL_ERROR(
      load_bytes(
          make_file("{" + ok_entry + R"(,"b":{"dtype":"U8","shape":[2],"data_offsets":[10,12]}})",
                    std::string(12, '\0'))),
      "bytes [8, 10) of the data section belong to no tensor");
  // Truncated data: the header describes 8 bytes, only 5 remain.
  EXPECT_MEL_ERROR(load_bytes(make_file("{" + ok_entry + "}", std::string(5, '\0'))),
                   "broken.safetensors", "run past the end of the data section (5 bytes)",
                   "truncated");
  // Trailing bytes no tensor claims.
  EXPECT_MEL_ERROR(load_bytes(make_file("{" + ok_entry + "}", std::string(11, '\0'))),
                   "data section has 11 bytes but the tensors cover 8", "size mismatch");
  EXPECT_MEL_ERROR(load_bytes(make_file(R"({"__metadata__":{"n":3}})", "")),
                   "metadata entry 'n' is 3");
  EXPECT_MEL_ERROR(load_bytes(make_file(R"({"__metadata__":[1]})", "")),
                   "\"__metadata__\" is not an object");

  // A real file cut short anywhere fails cleanly.
  const std::string good = dir.file("good.safetensors");
  save_safetensors(good, {{"w", ones({3, 3})}, {"b", zeros({3}, DType::i64)}});
  const std::string full_bytes = read_bytes(good);
  for (size_t cut : {size_t(0), size_t(4), size_t(8), size_t(20), full_bytes.size() - 1}) {
    EXPECT_MEL_ERROR(load_bytes(full_bytes.substr(0, cut)), "broken.safetensors");
  }
  EXPECT_EQ(load_bytes(full_bytes).tensors.size(), 2u);
}

}  // namespace
}  // namespace mel
