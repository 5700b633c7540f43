// Strict reading of JSON configs: every object is read through a JsonReader that knows its path
// ("train.optimizer"), reports missing or ill-typed values, and rejects unknown keys by name.
#pragma once
#include <nlohmann/json.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace mel {

using Json = nlohmann::ordered_json;

// The closest of `candidates` to `word` by edit distance (empty when nothing is close).
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

class JsonReader {
 public:
  // `source` names the file (for messages); `path` the object's position in it.
  JsonReader(const Json& object, std::string source, std::string path);

  bool has(const std::string& key) const;
  const Json& raw(const std::string& key) const;  // must exist
  JsonReader object(const std::string& key) const;
  std::vector<JsonReader> objects(const std::string& key) const;  // an array of objects

  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  double get_number(const std::string& key) const;
  double get_number(const std::string& key, double fallback) const;
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::vector<double> get_numbers(const std::string& key) const;
  std::vector<int64_t> get_ints(const std::string& key) const;
  // An int or a list of two ints ("kernel": 3 or [3, 5]).
  std::array<int64_t, 2> get_pair(const std::string& key, std::array<int64_t, 2> fallback) const;

  // Declares keys that are valid even when not read; then throws on any other key, naming it
  // and the closest valid one.
  void allow(const std::vector<std::string>& keys) const;
  void finish() const;

  // Throws an error located at this object: "<source>: <path>.<key>: <what>".
  [[noreturn]] void error(const std::string& key, const std::string& what) const;
  const std::string& path() const { return path_; }
  const std::string& source() const { return source_; }
  const Json& json() const { return *object_; }

 private:
  std::string where(const std::string& key) const;
  const Json* object_;
  std::string source_, path_;
  mutable std::set<std::string> known_;
};

// Limits on config text: a longer file or deeper nesting is refused with an error naming the
// source before the JSON parser sees it.
inline constexpr size_t kMaxConfigBytes = size_t{16} << 20;
inline constexpr int kMaxJsonDepth = 64;

// Parses config text; `source` names it in errors (with the line and column of a syntax error).
// Text over kMaxConfigBytes or nested deeper than kMaxJsonDepth is an error.
Json parse_json_text(const std::string& text, const std::string& source);

// Reads and parses a file through parse_json_text (at most kMaxConfigBytes are read, so a device
// or a huge file is refused rather than read to the end).
Json read_json_file(const std::string& path);

// A value as compact JSON for a message: at most `max_chars` characters, longer values cut with
// "..." and their full length (an error quoting a value never repeats a whole file).
std::string json_excerpt(const Json& value, size_t max_chars = 80);
// The same for a string (a key, a file name) as it appears in a message.
std::string text_excerpt(const std::string& text, size_t max_chars = 80);
// Where JSON text first nests deeper than `limit` levels of [ and { (counted outside strings,
// before any parsing): 1-based line and column, or line 0 when it never does.
struct NestingExcess {
  size_t line = 0, column = 0;
};
NestingExcess find_nesting_excess(const std::string& text, int limit);

}  // namespace mel
