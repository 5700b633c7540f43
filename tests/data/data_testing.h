// Helpers for the data tests: a self-cleaning temporary folder, file writers, gzip compression
// through zlib, an IDX file builder and small synthetic in-memory datasets.
#pragma once
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/mel.h"
#include "data/dataset.h"

namespace mel::data::testing {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            fmt::format("mel_data_{}_{}_{}", info->name(), ::getpid(), std::random_device{}());
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_file(const std::string& path, const Bytes& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// One gzip member (windowBits 31: gzip wrapper).
inline Bytes gzip(const Bytes& in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
  Bytes out(deflateBound(&zs, static_cast<uLong>(in.size())) + 32);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// An unsigned-byte IDX file: magic 0x000008NN, big-endian dims, then `data`.
inline Bytes idx_file(const std::vector<uint32_t>& dims, const Bytes& data) {
  Bytes out = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(d >> s));
  }
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Bytes with a recognisable pattern (and some repetition, so gzip has work to do).
inline Bytes pattern(size_t n, uint32_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>((i * 31 + seed * 17 + (i / 7)) % 251);
  return b;
}

// An in-memory dataset whose label is the sample index (num_classes = n), so batches reveal
// which samples they hold; pixel p of sample i is (i * 13 + p * 7) % 256.
inline ImageDataset index_dataset(int64_t n, int64_t c, int64_t h, int64_t w, bool coarse = false) {
  ImageDataset ds;
  ds.name = "synthetic";
  ds.images = empty({n, c, h, w}, DType::u8);
  ds.labels = empty({n}, DType::i64);
  uint8_t* p = ds.images.data<uint8_t>();
  const int64_t per = c * h * w;
  for (int64_t i = 0; i < n; ++i) {
    ds.labels.data<int64_t>()[i] = i;
    for (int64_t k = 0; k < per; ++k) p[i * per + k] = static_cast<uint8_t>((i * 13 + k * 7) % 256);
  }
  ds.num_classes = n;
  if (coarse) {
    ds.coarse_labels = empty({n}, DType::i64);
    for (int64_t i = 0; i < n; ++i) ds.coarse_labels.data<int64_t>()[i] = i % 4;
    ds.num_coarse_classes = 4;
  }
  return ds;
}

}  // namespace mel::data::testing
