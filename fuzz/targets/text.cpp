// Fuzz target: a text corpus file (data/text parse_text_corpus): documents separated by lines
// "%", strict UTF-8. What parses must give documents that end in '\n' and hold text, whose
// vocabulary encodes and decodes each of them back to the same bytes, whose token stream has one
// id per character plus one per document, and whose windows hold the stream's tokens. The same
// bytes as a stored vocabulary (Vocabulary::from_string) must round-trip through to_string. A clean
// mel::Error is the expected answer to malformed bytes; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "data/text.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void documents(std::string_view bytes) {
  std::vector<mel::data::TextDocument> docs;
  try {
    docs = mel::data::parse_text_corpus(bytes, "fuzz.txt");
  } catch (const mel::Error&) {
    return;
  }
  if (docs.empty()) return;
  size_t chars = 0;
  const mel::data::Vocabulary v = mel::data::Vocabulary::from_documents(docs);
  for (const auto& d : docs) {
    check(!d.text.empty() && d.text.back() == '\n' && d.text.size() <= bytes.size() + 1);
    const std::vector<int64_t> ids = v.encode(d.text, d.source);
    check(v.decode(ids) == d.text);
    check(v.missing(d.text).empty());
    chars += ids.size() + 1;
  }
  const std::vector<int64_t> stream = mel::data::encode_documents(v, docs, "fuzz");
  check(stream.size() == chars);
  // The stored form gives the same vocabulary.
  check(mel::data::Vocabulary::from_string(v.to_string(), "fuzz vocabulary").chars() == v.chars());
  // The split keeps every document.
  const mel::data::TextSplit split = mel::data::split_documents(docs, 0.5);
  check(split.train.size() + split.validation.size() == docs.size());
  // Sequential windows of 3 characters: y is x shifted by one, all from the stream.
  if (stream.size() >= 4) {
    mel::data::TextWindowOptions o;
    o.context = 3;
    o.batch_size = 2;
    o.random = false;
    o.limit = 8;
    mel::data::TextWindowLoader loader(stream, o, "fuzz");
    mel::data::Batch b;
    int64_t windows = 0;
    while (loader.next(b)) {
      const int64_t rows = b.x.size(0);
      for (int64_t r = 0; r < rows; ++r, ++windows) {
        const int64_t s = windows * 3;
        for (int64_t t = 0; t < 3; ++t) {
          check(b.x.data<int64_t>()[r * 3 + t] == stream[static_cast<size_t>(s + t)]);
          check(b.y.data<int64_t>()[r * 3 + t] == stream[static_cast<size_t>(s + t + 1)]);
        }
      }
    }
    check(windows == loader.num_samples());
  }
}

void stored_vocabulary(std::string_view bytes) {
  mel::data::Vocabulary v;
  try {
    v = mel::data::Vocabulary::from_string(bytes, "fuzz vocabulary");
  } catch (const mel::Error&) {
    return;
  }
  check(v.size() > 0 && v.to_string() == bytes);
  std::vector<int64_t> all(static_cast<size_t>(v.size()));
  for (int64_t i = 0; i < v.size(); ++i) all[static_cast<size_t>(i)] = i;
  check(v.decode(all) == bytes);
  check(v.encode(bytes, "fuzz") == all);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  documents(bytes);
  stored_vocabulary(bytes);
  return 0;
}
