#include "data/io.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"

namespace mel::data {

namespace {

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Frees zlib's state on every path out of gunzip.
struct Inflater {
  z_stream zs{};
  bool live = false;
  ~Inflater() {
    if (live) inflateEnd(&zs);
  }
};

// The gzip trailer stores the uncompressed size modulo 2^32: a good first guess for one member.
// A damaged trailer only costs reallocations, so the guess is capped by deflate's best ratio.
size_t output_guess(const uint8_t* data, size_t size) {
  size_t guess = size * 4;
  if (size >= 18) {
    uint32_t isize = 0;
    std::memcpy(&isize, data + size - 4, 4);
    guess = std::min<size_t>(std::max<size_t>(isize, 1), size * 1032 + 64);
  }
  return guess;
}

// Inflates one gzip member from data[pos, size) into out[produced, ...), growing out as needed;
// pos and produced advance past what it consumed and wrote.
void inflate_member(Inflater& inf, const uint8_t* data, size_t size, size_t& pos,
                    std::vector<uint8_t>& out, size_t& produced, const std::string& path) {
  bool member_done = false;
  while (!member_done) {
    if (produced == out.size()) out.resize(out.size() * 2);
    const size_t in_chunk = std::min<size_t>(size - pos, UINT_MAX);
    const size_t out_chunk = std::min<size_t>(out.size() - produced, UINT_MAX);
    inf.zs.next_in = const_cast<Bytef*>(data + pos);
    inf.zs.avail_in = static_cast<uInt>(in_chunk);
    inf.zs.next_out = out.data() + produced;
    inf.zs.avail_out = static_cast<uInt>(out_chunk);
    const int ret = inflate(&inf.zs, Z_NO_FLUSH);
    pos += in_chunk - inf.zs.avail_in;
    produced += out_chunk - inf.zs.avail_out;
    switch (ret) {
      case Z_STREAM_END:
        member_done = true;
        break;
      case Z_OK:
        break;
      case Z_BUF_ERROR:
        // No progress: either the output is full (grown above) or the input ran out.
        if (inf.zs.avail_out != 0 && pos == size) {
          fail(
              "'{}': truncated gzip file: the compressed data ends after {} bytes (and {} "
              "decompressed bytes) before the end of the stream",
              path, size, produced);
        }
        break;
      case Z_NEED_DICT:
      case Z_DATA_ERROR:
        fail("'{}': corrupted gzip data at compressed byte {} (zlib: {})", path, pos,
             inf.zs.msg ? inf.zs.msg : "invalid data");
      case Z_MEM_ERROR:
        fail("'{}': out of memory while decompressing", path);
      default:
        fail("'{}': zlib error {} while decompressing", path, ret);
    }
    if (!member_done && pos == size && inf.zs.avail_out != 0 && ret == Z_OK) {
      // All input consumed, room left in the output, stream not finished: cut short.
      fail(
          "'{}': truncated gzip file: the compressed data ends after {} bytes (and {} "
          "decompressed bytes) before the end of the stream",
          path, size, produced);
    }
  }
}

}  // namespace

std::vector<uint8_t> read_raw_file(const std::string& path) {
  std::error_code ec;
  MEL_CHECK(!std::filesystem::is_directory(path, ec), "'{}' is a directory, not a data file", path);
  std::unique_ptr<FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  MEL_CHECK(f, "cannot open '{}': {}", path, std::strerror(errno));
  MEL_CHECK(std::fseek(f.get(), 0, SEEK_END) == 0, "cannot seek in '{}': {}", path,
            std::strerror(errno));
  const long size = std::ftell(f.get());
  MEL_CHECK(size >= 0, "cannot tell the size of '{}': {}", path, std::strerror(errno));
  std::rewind(f.get());
  std::vector<uint8_t> out(static_cast<size_t>(size));
  const size_t got = out.empty() ? 0 : std::fread(out.data(), 1, out.size(), f.get());
  MEL_CHECK(got == out.size(), "reading '{}' failed after {} of {} bytes: {}", path, got,
            out.size(), std::strerror(errno));
  return out;
}

std::vector<uint8_t> gunzip(const uint8_t* data, size_t size, const std::string& path) {
  MEL_CHECK(size > 0, "'{}': empty file (expected gzip data)", path);
  std::vector<uint8_t> out(output_guess(data, size) + 1);
  size_t produced = 0;

  Inflater inf;
  // 16 + MAX_WBITS: gzip wrapper only, so a zlib or raw file named .gz is reported as corrupted.
  MEL_CHECK(inflateInit2(&inf.zs, 16 + MAX_WBITS) == Z_OK, "'{}': zlib initialisation failed",
            path);
  inf.live = true;
  size_t pos = 0;
  while (true) {
    inflate_member(inf, data, size, pos, out, produced, path);
    // Further members follow only if non-zero bytes remain (some tools pad with zeros).
    if (std::all_of(data + pos, data + size, [](uint8_t b) { return b == 0; })) break;
    MEL_CHECK(inflateReset(&inf.zs) == Z_OK, "'{}': zlib reset failed", path);
  }
  out.resize(produced);
  return out;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::vector<uint8_t> raw = read_raw_file(path);
  if (!ends_with(path, ".gz")) return raw;
  return gunzip(raw.data(), raw.size(), path);
}

}  // namespace mel::data
