// Whole-file reads for dataset loaders: raw bytes, or gunzipped through zlib when the name ends in
// ".gz", with errors that name the file and say whether it is missing, truncated or corrupted.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mel::data {

// The file's bytes; gzip files (name ending in ".gz") are decompressed, including files of several
// concatenated gzip members.
std::vector<uint8_t> read_file(const std::string& path);

// The raw bytes, whatever the name.
std::vector<uint8_t> read_raw_file(const std::string& path);

// Decompresses a gzip stream held in memory; `path` only names the source in errors.
std::vector<uint8_t> gunzip(const uint8_t* data, size_t size, const std::string& path);

}  // namespace mel::data
