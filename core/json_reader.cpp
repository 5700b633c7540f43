#include "core/json_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace mel {

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  // Only suggest when the name is plausibly a typo of the candidate.
  if (best_d == std::string::npos || best_d > std::max<size_t>(2, best.size() / 2)) return "";
  return best;
}

JsonReader::JsonReader(const Json& object, std::string source, std::string path)
    : object_(&object), source_(std::move(source)), path_(std::move(path)) {
  if (!object.is_object()) {
    fail("{}: {}: expected a JSON object, got {}", source_, path_.empty() ? "top level" : path_,
         object.dump());
  }
}

std::string JsonReader::where(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

void JsonReader::error(const std::string& key, const std::string& what) const {
  fail("{}: {}: {}", source_, key.empty() ? path_ : where(key), what);
}

bool JsonReader::has(const std::string& key) const {
  known_.insert(key);
  return object_->contains(key) && !(*object_)[key].is_null();
}

const Json& JsonReader::raw(const std::string& key) const {
  if (!has(key)) error(key, "missing (required)");
  return (*object_)[key];
}

JsonReader JsonReader::object(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_object()) error(key, fmt::format("expected an object, got {}", j.dump()));
  return JsonReader(j, source_, where(key));
}

std::vector<JsonReader> JsonReader::objects(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_array()) error(key, fmt::format("expected a list of objects, got {}", j.dump()));
  std::vector<JsonReader> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string p = fmt::format("{}[{}]", where(key), i);
    if (!j[i].is_object()) {
      fail("{}: {}: expected an object, got {}", source_, p, j[i].dump());
    }
    out.emplace_back(j[i], source_, p);
  }
  return out;
}

std::string JsonReader::get_string(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_string()) error(key, fmt::format("expected a string, got {}", j.dump()));
  return j.get<std::string>();
}

std::string JsonReader::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

double JsonReader::get_number(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_number()) error(key, fmt::format("expected a number, got {}", j.dump()));
  return j.get<double>();
}

double JsonReader::get_number(const std::string& key, double fallback) const {
  return has(key) ? get_number(key) : fallback;
}

int64_t JsonReader::get_int(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_number_integer()) error(key, fmt::format("expected an integer, got {}", j.dump()));
  return j.get<int64_t>();
}

int64_t JsonReader::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

bool JsonReader::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const Json& j = raw(key);
  if (!j.is_boolean()) error(key, fmt::format("expected true or false, got {}", j.dump()));
  return j.get<bool>();
}

std::vector<double> JsonReader::get_numbers(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_array()) error(key, fmt::format("expected a list of numbers, got {}", j.dump()));
  std::vector<double> out;
  for (const auto& v : j) {
    if (!v.is_number()) error(key, fmt::format("expected a list of numbers, got {}", j.dump()));
    out.push_back(v.get<double>());
  }
  return out;
}

std::vector<int64_t> JsonReader::get_ints(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_array()) error(key, fmt::format("expected a list of integers, got {}", j.dump()));
  std::vector<int64_t> out;
  for (const auto& v : j) {
    if (!v.is_number_integer()) {
      error(key, fmt::format("expected a list of integers, got {}", j.dump()));
    }
    out.push_back(v.get<int64_t>());
  }
  return out;
}

std::array<int64_t, 2> JsonReader::get_pair(const std::string& key,
                                            std::array<int64_t, 2> fallback) const {
  if (!has(key)) return fallback;
  const Json& j = raw(key);
  if (j.is_number_integer()) return {j.get<int64_t>(), j.get<int64_t>()};
  if (j.is_array() && j.size() == 2 && j[0].is_number_integer() && j[1].is_number_integer()) {
    return {j[0].get<int64_t>(), j[1].get<int64_t>()};
  }
  error(key, fmt::format("expected an integer or a list of two integers, got {}", j.dump()));
}

void JsonReader::allow(const std::vector<std::string>& keys) const {
  known_.insert(keys.begin(), keys.end());
}

void JsonReader::finish() const {
  const std::vector<std::string> valid(known_.begin(), known_.end());
  for (auto it = object_->begin(); it != object_->end(); ++it) {
    if (known_.count(it.key())) continue;
    const std::string close = closest_match(it.key(), valid);
    error(it.key(),
          close.empty()
              ? fmt::format("unknown key '{}' (valid keys: {})", it.key(), fmt::join(valid, ", "))
              : fmt::format("unknown key '{}' (did you mean '{}'?)", it.key(), close));
  }
}

Json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open the file (does it exist?)", path);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return Json::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
}

}  // namespace mel
