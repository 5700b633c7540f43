#include "data/text.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <unordered_set>
#include <utility>

#include "core/error.h"
#include "core/random.h"
#include "core/tensor.h"
#include "data/io.h"

namespace mel::data {

namespace fs = std::filesystem;

namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;
// The stream of window starts, distinct from the loader's shuffle and augmentation streams.
constexpr uint64_t kTextWindowStream = 0x57494e444f5753ull;  // "WINDOWS"

// The code point at s[i]: its length in bytes (1 to 4), or 0 when the bytes there are not valid
// UTF-8 (overlong, surrogate, above U+10FFFF, truncated, a stray continuation or an unused byte),
// with `why` saying how.
size_t utf8_decode_at(std::string_view s, size_t i, char32_t& cp, std::string& why) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  size_t n = 0;
  char32_t least = 0;
  if (b0 < 0xC0) {
    why = fmt::format("byte 0x{:02X} is a continuation byte without a lead byte", b0);
    return 0;
  } else if (b0 < 0xE0) {
    n = 2, cp = b0 & 0x1Fu, least = 0x80;
  } else if (b0 < 0xF0) {
    n = 3, cp = b0 & 0x0Fu, least = 0x800;
  } else if (b0 < 0xF8) {
    n = 4, cp = b0 & 0x07u, least = 0x10000;
  } else {
    why = fmt::format("byte 0x{:02X} never occurs in UTF-8", b0);
    return 0;
  }
  for (size_t k = 1; k < n; ++k) {
    if (i + k >= s.size()) {
      why = fmt::format(
          "truncated sequence: lead byte 0x{:02X} starts {} bytes, the text ends after {}", b0, n,
          k);
      return 0;
    }
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0u) != 0x80u) {
      why = fmt::format(
          "truncated sequence: lead byte 0x{:02X} starts {} bytes, but byte {} of them is 0x{:02X}",
          b0, n, k + 1, b);
      return 0;
    }
    cp = (cp << 6) | (b & 0x3Fu);
  }
  std::string bytes;
  for (size_t k = 0; k < n; ++k) {
    bytes += fmt::format("{}{:02X}", k ? " " : "", static_cast<unsigned char>(s[i + k]));
  }
  if (cp < least) {
    why = fmt::format("overlong encoding of U+{:04X} in {} bytes ({})", static_cast<uint32_t>(cp),
                      n, bytes);
  } else if (cp >= 0xD800 && cp <= 0xDFFF) {
    why = fmt::format("UTF-16 surrogate U+{:04X} ({}), not a character", static_cast<uint32_t>(cp),
                      bytes);
  } else if (cp > kMaxCodePoint) {
    why = fmt::format("code point U+{:X} ({}) above U+10FFFF", static_cast<uint32_t>(cp), bytes);
  } else {
    return n;
  }
  return 0;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_of(char32_t cp) {
  std::string s;
  utf8_append(s, cp);
  return s;
}

// 1-based line of byte `offset`.
size_t line_of(std::string_view s, size_t offset) {
  return 1 + static_cast<size_t>(
                 std::count(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(offset), '\n'));
}

// Calls f(code point) for each character of `s`; invalid UTF-8 is an error in which `where`
// (e.g. "the prompt") is followed by the line and byte offset.
template <class F>
void for_each_char(std::string_view s, const std::string& where, F&& f) {
  std::string why;
  for (size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    const size_t n = utf8_decode_at(s, i, cp, why);
    if (n == 0) {
      fail("{}: invalid UTF-8 at line {}, byte offset {}: {}", where, line_of(s, i), i, why);
    }
    f(cp);
    i += n;
  }
}

bool is_text_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// A character as a message shows it: quoted when printable, else U+XXXX.
std::string describe_char(char32_t cp) {
  const bool control = cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
  const bool invisible = cp == 0xAD || (cp >= 0x200B && cp <= 0x200F) ||
                         (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2060 && cp <= 0x206F) ||
                         cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFB) ||
                         (cp >= 0xE000 && cp <= 0xF8FF) || cp >= 0xF0000;
  if (control || invisible) return fmt::format("U+{:04X}", static_cast<uint32_t>(cp));
  return fmt::format("'{}'", utf8_of(cp));
}

// The distinct characters of the documents that `v` lacks, as UTF-8, in order of first appearance.
std::vector<std::string> missing_in_documents(const Vocabulary& v,
                                              const std::vector<TextDocument>& docs) {
  std::vector<std::string> out;
  std::unordered_set<char32_t> seen;
  for (const TextDocument& d : docs) {
    for_each_char(d.text, d.source, [&](char32_t cp) {
      if (v.id(cp) < 0 && seen.insert(cp).second) out.push_back(utf8_of(cp));
    });
  }
  return out;
}

}  // namespace

std::string text_corpus_default_dir() {
  if (const char* home = std::getenv("MEL_DATA_HOME"); home && *home) {
    return (fs::path(home) / kTextCorpusName).string();
  }
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : ".") / ".local/share/mel" / kTextCorpusName).string();
}

// ---- reading
// -------------------------------------------------------------------------------------

std::vector<TextDocument> parse_text_corpus(std::string_view bytes, const std::string& name) {
  // Valid UTF-8 without NUL, checked first so that a problem is reported wherever it is.
  {
    std::string why;
    for (size_t i = 0; i < bytes.size();) {
      const char c = bytes[i];
      if (c == '\0') {
        fail("{}: a NUL byte at line {}, byte offset {} (expected UTF-8 text)", name,
             line_of(bytes, i), i);
      }
      if (static_cast<unsigned char>(c) < 0x80) {
        ++i;
        continue;
      }
      char32_t cp = 0;
      const size_t n = utf8_decode_at(bytes, i, cp, why);
      if (n == 0) {
        fail(
            "{}: invalid UTF-8 at line {}, byte offset {}: {} (expected UTF-8 text; "
            "scripts/make_text_corpus.sh converts Latin-1 files)",
            name, line_of(bytes, i), i, why);
      }
      i += n;
    }
  }
  std::vector<TextDocument> docs;
  std::string text;
  bool has_text = false;
  size_t line = 0, first_line = 1;
  const auto flush = [&] {
    if (has_text) {
      docs.push_back({std::move(text), fmt::format("{}:{}", name, docs.size() + 1),
                      static_cast<int64_t>(first_line)});
    }
    text.clear();
    has_text = false;
  };
  for (size_t pos = 0; pos < bytes.size();) {
    const size_t end = std::min(bytes.find('\n', pos), bytes.size());
    const std::string_view l = bytes.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (l == "%") {
      flush();
      continue;
    }
    MEL_CHECK(l != "%\r",
              "{}: line {} is \"%\" with a CRLF line ending (expected LF line endings: convert the "
              "file, e.g. with dos2unix)",
              name, line);
    if (text.empty()) first_line = line;
    text.append(l);
    text += '\n';
    has_text =
        has_text || std::any_of(l.begin(), l.end(), [](char c) { return !is_text_space(c); });
  }
  flush();
  return docs;
}

std::vector<TextDocument> read_text_corpus(const std::string& dir) {
  std::error_code ec;
  MEL_CHECK(fs::is_directory(dir, ec),
            "text corpus: the folder {} does not exist (make it with scripts/make_text_corpus.sh, "
            "which needs the Debian package `fortunes`, or pass the corpus folder with --data)",
            dir);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.' || entry.path().extension() != ".txt") continue;
    std::error_code fec;
    if (entry.is_regular_file(fec)) names.push_back(name);
  }
  MEL_CHECK(!ec, "text corpus: cannot list {}: {}", dir, ec.message());
  MEL_CHECK(!names.empty(),
            "text corpus: {} has no .txt files (expected UTF-8 text files of documents separated "
            "by lines \"%\", as scripts/make_text_corpus.sh writes them)",
            dir);
  std::sort(names.begin(), names.end());
  std::vector<TextDocument> docs;
  for (const std::string& name : names) {
    const std::vector<uint8_t> raw = read_raw_file((fs::path(dir) / name).string());
    const std::string_view bytes(reinterpret_cast<const char*>(raw.data()), raw.size());
    for (TextDocument& d : parse_text_corpus(bytes, (fs::path(dir) / name).string())) {
      d.source = fmt::format("{}:{}", name, d.source.substr(d.source.rfind(':') + 1));
      docs.push_back(std::move(d));
    }
  }
  MEL_CHECK(!docs.empty(),
            "text corpus: the {} .txt files of {} hold no document (only empty or whitespace-only "
            "text between lines \"%\")",
            names.size(), dir);
  return docs;
}

// ---- splitting
// -----------------------------------------------------------------------------------

uint64_t text_hash(std::string_view bytes) {
  uint64_t h = 14695981039346656037ull;
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

bool is_validation_document(std::string_view text, double validation_fraction) {
  MEL_CHECK(validation_fraction > 0 && validation_fraction < 1,
            "text split: validation_fraction must be in (0, 1), got {}", validation_fraction);
  return static_cast<double>(text_hash(text) % 1000000) < validation_fraction * 1000000;
}

TextSplit split_documents(std::vector<TextDocument> docs, double validation_fraction) {
  is_validation_document("", validation_fraction);  // checks the fraction with no documents too
  TextSplit s;
  for (TextDocument& d : docs) {
    (is_validation_document(d.text, validation_fraction) ? s.validation : s.train)
        .push_back(std::move(d));
  }
  return s;
}

// ---- vocabulary
// ----------------------------------------------------------------------------------

void Vocabulary::add(char32_t c) {
  const auto id = static_cast<int64_t>(chars_.size());
  chars_.push_back(c);
  utf8_.push_back(utf8_of(c));
  if (c < 128) {
    ascii_[c] = static_cast<int32_t>(id + 1);
  } else {
    others_.emplace(c, id);
  }
}

int64_t Vocabulary::id(char32_t c) const {
  if (c < 128) return ascii_[c] - 1;
  const auto it = others_.find(c);
  return it == others_.end() ? -1 : it->second;
}

Vocabulary Vocabulary::from_documents(const std::vector<TextDocument>& docs) {
  bool ascii[128] = {};
  std::unordered_set<char32_t> others;
  for (const TextDocument& d : docs) {
    for_each_char(d.text, d.source, [&](char32_t cp) {
      if (cp < 128) {
        ascii[cp] = true;
      } else {
        others.insert(cp);
      }
    });
  }
  std::vector<char32_t> rest(others.begin(), others.end());
  std::sort(rest.begin(), rest.end());
  Vocabulary v;
  for (char32_t c = 0; c < 128; ++c) {
    if (ascii[c]) v.add(c);
  }
  for (const char32_t c : rest) v.add(c);
  return v;
}

Vocabulary Vocabulary::from_string(std::string_view chars, const std::string& what) {
  Vocabulary v;
  int64_t position = 0;
  for_each_char(chars, what, [&](char32_t cp) {
    const int64_t before = v.id(cp);
    MEL_CHECK(before < 0,
              "{}: the character {} is given twice (characters {} and {}; expected each "
              "character of the vocabulary once)",
              what, describe_char(cp), before + 1, position + 1);
    v.add(cp);
    ++position;
  });
  MEL_CHECK(v.size() > 0, "{}: the vocabulary is empty (expected its characters as UTF-8 text)",
            what);
  return v;
}

std::string Vocabulary::to_string() const {
  std::string out;
  for (const std::string& s : utf8_) out += s;
  return out;
}

std::vector<int64_t> Vocabulary::encode(std::string_view text, const std::string& what) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  std::vector<std::string> absent;
  std::unordered_set<char32_t> seen;
  for_each_char(text, what, [&](char32_t cp) {
    const int64_t i = id(cp);
    if (i >= 0) {
      ids.push_back(i);
    } else if (seen.insert(cp).second) {
      absent.push_back(utf8_of(cp));
    }
  });
  MEL_CHECK(absent.empty(), "{} has {} character{} outside the vocabulary of {} characters: {}",
            what, absent.size(), absent.size() == 1 ? "" : "s", size(),
            describe_characters(absent));
  return ids;
}

std::string Vocabulary::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    MEL_CHECK(ids[i] >= 0 && ids[i] < size(),
              "Vocabulary::decode: id {} at position {} is out of range for a vocabulary of {} "
              "characters",
              ids[i], i, size());
    out += utf8_[static_cast<size_t>(ids[i])];
  }
  return out;
}

std::vector<std::string> Vocabulary::missing(std::string_view text, const std::string& what) const {
  std::vector<std::string> out;
  std::unordered_set<char32_t> seen;
  for_each_char(text, what, [&](char32_t cp) {
    if (id(cp) < 0 && seen.insert(cp).second) out.push_back(utf8_of(cp));
  });
  return out;
}

std::string describe_characters(const std::vector<std::string>& chars, size_t max_listed) {
  std::string out;
  const size_t listed = std::min(chars.size(), max_listed);
  for (size_t i = 0; i < listed; ++i) {
    std::string text;
    std::string why;
    char32_t cp = 0;
    const std::string_view s = chars[i];
    if (!s.empty() && utf8_decode_at(s, 0, cp, why) == s.size()) {
      text = describe_char(cp);
    } else {  // not one character: shown as its bytes
      for (const char c : s) text += fmt::format("\\x{:02X}", static_cast<unsigned char>(c));
    }
    out += (i ? ", " : "") + text;
  }
  if (chars.size() > listed) out += fmt::format(" and {} more", chars.size() - listed);
  return out;
}

std::vector<int64_t> encode_documents(const Vocabulary& v, const std::vector<TextDocument>& docs,
                                      const std::string& what) {
  std::vector<std::string> absent = missing_in_documents(v, docs);
  // The '\n' after each document must have an id too.
  if (!docs.empty() && v.id(U'\n') < 0 &&
      std::find(absent.begin(), absent.end(), "\n") == absent.end()) {
    absent.push_back("\n");
  }
  MEL_CHECK(absent.empty(), "{}: {} character{} outside the vocabulary of {} characters: {}", what,
            absent.size(), absent.size() == 1 ? " is" : "s are", v.size(),
            describe_characters(absent));
  size_t total = 0;
  for (const TextDocument& d : docs) total += d.text.size() + 1;
  std::vector<int64_t> ids;
  ids.reserve(total);
  const int64_t nl = v.id(U'\n');
  for (const TextDocument& d : docs) {
    for_each_char(d.text, d.source, [&](char32_t cp) { ids.push_back(v.id(cp)); });
    ids.push_back(nl);
  }
  return ids;
}

TextData load_text_data(const std::string& dir, const TextDataOptions& o) {
  MEL_CHECK(o.validation_fraction > 0 && o.validation_fraction < 1,
            "text corpus: validation_fraction must be in (0, 1), got {}", o.validation_fraction);
  std::vector<TextDocument> docs = read_text_corpus(dir);
  const size_t n = docs.size();
  TextData data;
  if (o.vocabulary.empty()) {
    data.vocab = Vocabulary::from_documents(docs);
  } else {
    data.vocab = Vocabulary::from_string(o.vocabulary, "the given vocabulary");
    const std::vector<std::string> absent = missing_in_documents(data.vocab, docs);
    MEL_CHECK(absent.empty(),
              "text corpus {}: the given vocabulary of {} characters lacks {} character{} of the "
              "corpus: {} (expected the corpus the vocabulary was made from)",
              dir, data.vocab.size(), absent.size(), absent.size() == 1 ? "" : "s",
              describe_characters(absent));
  }
  TextSplit split = split_documents(std::move(docs), o.validation_fraction);
  MEL_CHECK(!split.train.empty() && !split.validation.empty(),
            "text corpus {}: the {} split is empty: validation_fraction {} puts {} of the {} "
            "documents into validation (expected at least one document in each split)",
            dir, split.train.empty() ? "training" : "validation", o.validation_fraction,
            split.validation.size(), n);
  data.train = encode_documents(data.vocab, split.train, "the training split of " + dir);
  data.validation =
      encode_documents(data.vocab, split.validation, "the validation split of " + dir);
  data.train_documents = static_cast<int64_t>(split.train.size());
  data.validation_documents = static_cast<int64_t>(split.validation.size());
  return data;
}

// ---- windows
// -------------------------------------------------------------------------------------

TextWindowLoader::TextWindowLoader(const std::vector<int64_t>& tokens, TextWindowOptions o,
                                   std::string what)
    : tokens_(tokens), opts_(o), what_(std::move(what)) {
  const auto n = static_cast<int64_t>(tokens_.size());
  const int64_t t = opts_.context, b = opts_.batch_size;
  MEL_CHECK(t >= 1, "text windows: the context must be at least 1 character, got {}", t);
  MEL_CHECK(b >= 1, "text windows: the batch size must be at least 1, got {}", b);
  MEL_CHECK(n >= 2 && n - 1 >= t,
            "text windows: the {} text has {} characters; a context of {} needs at least {}", what_,
            n, t, t + 1);
  MEL_CHECK(b <= std::numeric_limits<int64_t>::max() / t,
            "text windows: a batch of {} windows of {} characters is too large", b, t);
  if (opts_.random) {
    MEL_CHECK(opts_.batches_per_epoch >= 1,
              "text windows: batches_per_epoch must be at least 1 for random windows, got {}",
              opts_.batches_per_epoch);
    MEL_CHECK(opts_.batches_per_epoch <= std::numeric_limits<int64_t>::max() / b,
              "text windows: {} batches of {} windows are too many", opts_.batches_per_epoch, b);
    num_batches_ = opts_.batches_per_epoch;
    num_windows_ = num_batches_ * b;
  } else {
    MEL_CHECK(opts_.limit >= 0, "text windows: limit must be >= 0 (0 = all windows), got {}",
              opts_.limit);
    num_windows_ = (n - 1) / t;
    if (opts_.limit > 0) num_windows_ = std::min(num_windows_, opts_.limit);
    num_batches_ = (num_windows_ + b - 1) / b;
  }
}

void TextWindowLoader::start_epoch(int64_t epoch) {
  started_ = true;
  epoch_ = epoch;
  cursor_ = 0;
}

int64_t TextWindowLoader::window_start(int64_t epoch, int64_t i) const {
  if (!opts_.random) return i * opts_.context;
  const uint64_t key = splitmix64(splitmix64(splitmix64(opts_.seed) ^ kTextWindowStream) +
                                  static_cast<uint64_t>(epoch));
  SplitMix64 rng(splitmix64(key ^ splitmix64(static_cast<uint64_t>(i))));
  const auto starts = static_cast<uint64_t>(static_cast<int64_t>(tokens_.size()) - opts_.context);
  return static_cast<int64_t>(rng.below(starts));
}

bool TextWindowLoader::next(Batch& out) {
  if (!started_) start_epoch(0);
  if (cursor_ >= num_batches_) return false;
  const int64_t t = opts_.context, first = cursor_ * opts_.batch_size;
  const int64_t rows = std::min(opts_.batch_size, num_windows_ - first);
  Tensor x = empty({rows, t}, DType::i64), y = empty({rows * t}, DType::i64);
  int64_t* px = x.data<int64_t>();
  int64_t* py = y.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t s = window_start(epoch_, first + r);
    const int64_t* src = tokens_.data() + s;
    std::copy(src, src + t, px + r * t);
    std::copy(src + 1, src + t + 1, py + r * t);
  }
  out = Batch{};
  out.x = std::move(x);
  out.y = std::move(y);
  out.index = cursor_++;
  return true;
}

}  // namespace mel::data
