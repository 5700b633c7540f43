#include "core/json_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <set>

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
    // The distance is at least the length difference: a word much longer than the candidate
    // cannot be a typo of it (and a huge key must not cost |word| * |candidate| steps each).
    const size_t diff = word.size() > c.size() ? word.size() - c.size() : c.size() - word.size();
    if (diff > std::max<size_t>(2, c.size() / 2)) continue;
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
         json_excerpt(object));
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
  if (!j.is_object()) error(key, fmt::format("expected an object, got {}", json_excerpt(j)));
  return JsonReader(j, source_, where(key));
}

std::vector<JsonReader> JsonReader::objects(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_array()) error(key, fmt::format("expected a list of objects, got {}", json_excerpt(j)));
  std::vector<JsonReader> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string p = fmt::format("{}[{}]", where(key), i);
    if (!j[i].is_object()) {
      fail("{}: {}: expected an object, got {}", source_, p, json_excerpt(j[i]));
    }
    out.emplace_back(j[i], source_, p);
  }
  return out;
}

std::string JsonReader::get_string(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_string()) error(key, fmt::format("expected a string, got {}", json_excerpt(j)));
  return j.get<std::string>();
}

std::string JsonReader::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

double JsonReader::get_number(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_number()) error(key, fmt::format("expected a number, got {}", json_excerpt(j)));
  return j.get<double>();
}

double JsonReader::get_number(const std::string& key, double fallback) const {
  return has(key) ? get_number(key) : fallback;
}

int64_t JsonReader::get_int(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_number_integer())
    error(key, fmt::format("expected an integer, got {}", json_excerpt(j)));
  return j.get<int64_t>();
}

int64_t JsonReader::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

bool JsonReader::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const Json& j = raw(key);
  if (!j.is_boolean()) error(key, fmt::format("expected true or false, got {}", json_excerpt(j)));
  return j.get<bool>();
}

std::vector<double> JsonReader::get_numbers(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_array()) error(key, fmt::format("expected a list of numbers, got {}", json_excerpt(j)));
  std::vector<double> out;
  for (const auto& v : j) {
    if (!v.is_number())
      error(key, fmt::format("expected a list of numbers, got {}", json_excerpt(j)));
    out.push_back(v.get<double>());
  }
  return out;
}

std::vector<int64_t> JsonReader::get_ints(const std::string& key) const {
  const Json& j = raw(key);
  if (!j.is_array())
    error(key, fmt::format("expected a list of integers, got {}", json_excerpt(j)));
  std::vector<int64_t> out;
  for (const auto& v : j) {
    if (!v.is_number_integer()) {
      error(key, fmt::format("expected a list of integers, got {}", json_excerpt(j)));
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
  error(key, fmt::format("expected an integer or a list of two integers, got {}", json_excerpt(j)));
}

void JsonReader::allow(const std::vector<std::string>& keys) const {
  known_.insert(keys.begin(), keys.end());
}

void JsonReader::finish() const {
  const std::vector<std::string> valid(known_.begin(), known_.end());
  for (auto it = object_->begin(); it != object_->end(); ++it) {
    if (known_.count(it.key())) continue;
    const std::string close = closest_match(it.key(), valid);
    const std::string key = text_excerpt(it.key());
    error(key, close.empty()
                   ? fmt::format("unknown key '{}' (valid keys: {})", key, fmt::join(valid, ", "))
                   : fmt::format("unknown key '{}' (did you mean '{}'?)", key, close));
  }
}

std::string text_excerpt(const std::string& text, size_t max_chars) {
  if (text.size() <= max_chars) return text;
  size_t cut = max_chars;
  // Never split a UTF-8 sequence: the message may be put into JSON (a server's error reply).
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return fmt::format("{}... ({} characters)", text.substr(0, cut), text.size());
}

std::string json_excerpt(const Json& value, size_t max_chars) {
  return text_excerpt(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                      max_chars);
}

NestingExcess find_nesting_excess(const std::string& text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  size_t line = 1, column = 0;
  for (const char c : text) {
    ++column;
    if (c == '\n') {
      ++line;
      column = 0;
    }
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return {line, column};
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return {};
}

Json parse_json_text(const std::string& text, const std::string& source) {
  if (text.size() > kMaxConfigBytes) {
    fail("{}: the config is {} bytes long, more than the {} bytes a config may have", source,
         text.size(), kMaxConfigBytes);
  }
  // Nesting depth, counted outside strings before parsing: a config is a few levels deep, and
  // deep nesting would cost recursion in every later walk over the value (dump, comparison).
  const NestingExcess deep = find_nesting_excess(text, kMaxJsonDepth);
  if (deep.line > 0) {
    fail("{}: line {}, column {}: the JSON nests deeper than {} levels", source, deep.line,
         deep.column, kMaxJsonDepth);
  }
  // A key given twice in one object would silently keep the last value: an error instead, naming
  // the key and the path of the object holding it.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  Json::parser_callback_t on_event = [&](int, nlohmann::json::parse_event_t event, Json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      keys.emplace_back();
    } else if (event == E::object_end) {
      keys.pop_back();
    } else if (event == E::key) {
      const std::string k = parsed.get<std::string>();
      if (!keys.empty() && !keys.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  Json parsed;
  try {
    parsed = Json::parse(text, on_event);
  } catch (const nlohmann::json::exception& e) {
    // A syntax error or a number out of range (1e999). The parser's message has the line and
    // column and quotes the last token read: cut it short.
    fail("{}: not valid JSON: {}", source, text_excerpt(e.what(), 200));
  }
  if (!duplicate.empty()) {
    fail("{}: key '{}' appears twice in one object (JSON keeps only the last; remove one)", source,
         text_excerpt(duplicate));
  }
  return parsed;
}

Json read_json_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    fail("{}: is a directory, not a config file", path);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the file (does it exist?)", path);
  // Read at most one byte more than a config may have (a device such as /dev/zero never ends).
  std::string text;
  std::array<char, 65536> chunk;
  while (text.size() <= kMaxConfigBytes && in) {
    in.read(chunk.data(), chunk.size());
    text.append(chunk.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) fail("{}: reading the file failed", path);
  if (text.size() > kMaxConfigBytes) {
    fail("{}: the file is larger than the {} bytes a config may have", path, kMaxConfigBytes);
  }
  return parse_json_text(text, path);
}

}  // namespace mel
