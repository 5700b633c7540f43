// Text corpora (data/text): reading and splitting fortune files at "%" lines, strict UTF-8, the
// deterministic split by document, the character vocabulary and its stored form, token streams,
// the window loader; and the real corpus of scripts/make_text_corpus.sh when it is there.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "data/text.h"
#include "tests/temp_dir.h"

namespace mel::data::text_testing {
namespace {

namespace fs = std::filesystem;
using ::mel::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string text_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void put(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
  ASSERT_TRUE(f.good()) << path;
}

std::vector<std::string> texts(const std::vector<TextDocument>& docs) {
  std::vector<std::string> out;
  for (const auto& d : docs) out.push_back(d.text);
  return out;
}

std::vector<TextDocument> docs_of(const std::vector<std::string>& texts) {
  std::vector<TextDocument> out;
  for (size_t i = 0; i < texts.size(); ++i)
    out.push_back({texts[i], fmt::format("t.txt:{}", i + 1), 1});
  return out;
}

std::vector<int64_t> iota_tokens(int64_t n) {
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = i;
  return t;
}

// ---- reading and "%" splitting ------------------------------------------------------------------

TEST(TextCorpus, SplitsAtPercentLinesAndDropsEmptyDocuments) {
  const auto docs =
      parse_text_corpus("%\n%\nA line\n  indented\n%\n\n \t\n%\nB\n\nC\n%\n%\n", "f.txt");
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "A line\n  indented\n");
  EXPECT_EQ(docs[0].source, "f.txt:1");
  EXPECT_EQ(docs[0].line, 3);
  EXPECT_EQ(docs[1].text, "B\n\nC\n");
  EXPECT_EQ(docs[1].source, "f.txt:2");
  EXPECT_EQ(docs[1].line, 9);
  // No final newline, no final "%": the last line still ends its document with '\n'.
  EXPECT_EQ(texts(parse_text_corpus("A\n%\nB", "f.txt")), (std::vector<std::string>{"A\n", "B\n"}));
  // Only a line that is exactly "%" separates; '\r' elsewhere is an ordinary character.
  EXPECT_EQ(texts(parse_text_corpus("a%\n%%\n %\n% \nx\r\ny", "f.txt")),
            (std::vector<std::string>{"a%\n%%\n %\n% \nx\r\ny\n"}));
  // A file without documents: none (read_text_corpus complains about the folder).
  EXPECT_TRUE(parse_text_corpus("", "f.txt").empty());
  EXPECT_TRUE(parse_text_corpus("%\n \n\t\n%\n\n", "f.txt").empty());
  EXPECT_TRUE(parse_text_corpus("\n", "f.txt").empty());
  // A leading blank line belongs to the document it precedes.
  const auto lead = parse_text_corpus("\nX\n", "f.txt");
  ASSERT_EQ(lead.size(), 1u);
  EXPECT_EQ(lead[0].text, "\nX\n");
  EXPECT_EQ(lead[0].line, 1);
  // A separator with a CRLF ending is an error that names the line.
  EXPECT_THAT(text_error([] { parse_text_corpus("a\r\n%\r\nb\r\n", "crlf.txt"); }),
              AllOf(HasSubstr("crlf.txt"), HasSubstr("line 2"), HasSubstr("CRLF")));
}

TEST(TextCorpus, InvalidUtf8IsNamedWithFileLineAndOffset) {
  struct Case {
    std::string bytes, words;
  };
  const std::vector<Case> cases = {
      {"\x80", "continuation byte"},
      {"\xC0\xAF", "overlong"},
      {"\xC1\xBF", "overlong"},
      {"\xE0\x80\xAF", "overlong"},
      {"\xF0\x80\x80\xAF", "overlong"},
      {"\xED\xA0\x80", "surrogate"},
      {"\xED\xBF\xBF", "surrogate"},
      {"\xF4\x90\x80\x80", "above U+10FFFF"},
      {"\xF5\x80\x80\x80", "above U+10FFFF"},
      {"\xF8\x88\x80\x80\x80", "never occurs"},
      {"\xFF", "never occurs"},
      {"\xE2\x82", "truncated"},     // the text ends inside the sequence
      {"\xE2\x82z\n", "truncated"},  // another byte where a continuation byte belongs
      {"\xF0\x9F\x98", "truncated"},
      {std::string("\0", 1), "NUL byte"},
  };
  for (const Case& c : cases) {
    // Lines 1 and 2 are fine ("ok\n%\n": 5 bytes), the bad bytes start line 3 after "é=".
    const std::string bytes = "ok\n%\n\xC3\xA9=" + c.bytes;
    EXPECT_THAT(text_error([&] { parse_text_corpus(bytes, "bad.txt"); }),
                AllOf(HasSubstr("bad.txt"), HasSubstr("line 3"), HasSubstr("byte offset 8"),
                      HasSubstr(c.words)))
        << "bytes " << ::testing::PrintToString(c.bytes);
  }
  // The largest code point, the smallest of each length and the neighbours of the surrogates are
  // fine.
  for (const std::string ok : {"\xF4\x8F\xBF\xBF", "\xC2\x80", "\xE0\xA0\x80", "\xF0\x90\x80\x80",
                               "\xED\x9F\xBF", "\xEE\x80\x80"}) {
    const auto docs = parse_text_corpus(ok, "ok.txt");
    ASSERT_EQ(docs.size(), 1u);
    EXPECT_EQ(docs[0].text, ok + "\n");
  }
  // Through a folder: the message names the file.
  TempDir dir("text_utf8");
  put(dir / "a.txt", "fine\n");
  put(dir / "b.txt", "x\n%\ny\nLatin-1 caf\xE9\n");
  EXPECT_THAT(text_error([&] { read_text_corpus(dir.path.string()); }),
              AllOf(HasSubstr("b.txt"), HasSubstr("line 4"), HasSubstr("byte offset 17"),
                    HasSubstr("make_text_corpus.sh")));
}

TEST(TextCorpus, ReadsTheTxtFilesOfAFolderInNameOrder) {
  TempDir dir("text_read");
  put(dir / "b.txt", "B1\n%\nB2\n");
  put(dir / "a.txt", "A1\n");
  put(dir / "meta.json", "{\"documents\": 3}");
  put(dir / "c.dat", "\xFF\xFF binary");
  put(dir / ".hidden.txt", "\xFF");
  fs::create_directories(dir.path / "sub.txt");
  const auto docs = read_text_corpus(dir.path.string());
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(texts(docs), (std::vector<std::string>{"A1\n", "B1\n", "B2\n"}));
  EXPECT_EQ(docs[0].source, "a.txt:1");
  EXPECT_EQ(docs[2].source, "b.txt:2");
  EXPECT_EQ(docs[2].line, 3);
}

TEST(TextCorpus, BadFoldersAreClearErrors) {
  TempDir dir("text_folders");
  const std::string missing = dir / "nowhere";
  EXPECT_THAT(text_error([&] { read_text_corpus(missing); }),
              AllOf(HasSubstr(missing), HasSubstr("does not exist"),
                    HasSubstr("scripts/make_text_corpus.sh"), HasSubstr("fortunes")));
  fs::create_directories(dir.path / "empty");
  put(dir / "empty/meta.json", "{}");
  EXPECT_THAT(text_error([&] { read_text_corpus(dir / "empty"); }),
              AllOf(HasSubstr("empty"), HasSubstr("no .txt files")));
  fs::create_directories(dir.path / "blank");
  put(dir / "blank/a.txt", "%\n\n%\n");
  put(dir / "blank/b.txt", "");
  EXPECT_THAT(text_error([&] { read_text_corpus(dir / "blank"); }),
              AllOf(HasSubstr("blank"), HasSubstr("2 .txt files"), HasSubstr("no document")));
  EXPECT_THAT(text_error([&] { load_text_data(missing, {}); }), HasSubstr("does not exist"));
}

// ---- split
// ---------------------------------------------------------------------------------------

TEST(TextSplitRule, IsDeterministicByContentAndRoughlyTheFraction) {
  // FNV-1a 64 test vectors.
  EXPECT_EQ(text_hash(""), 14695981039346656037ull);
  EXPECT_EQ(text_hash("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(text_hash("foobar"), 0x85944171f73967e8ull);
  std::vector<std::string> t;
  for (int i = 0; i < 4000; ++i) t.push_back(fmt::format("document {}\nline two {}\n", i, i * 7));
  t.push_back(t[17]);  // duplicates land with their twins
  t.push_back(t[123]);
  const TextSplit a = split_documents(docs_of(t), 0.1), b = split_documents(docs_of(t), 0.1);
  EXPECT_EQ(texts(a.train), texts(b.train));
  EXPECT_EQ(texts(a.validation), texts(b.validation));
  EXPECT_EQ(a.train.size() + a.validation.size(), t.size());
  const double share = static_cast<double>(a.validation.size()) / static_cast<double>(t.size());
  EXPECT_NEAR(share, 0.1, 0.02);
  for (const size_t i : {size_t{17}, size_t{123}}) {
    const bool v = is_validation_document(t[i], 0.1);
    const std::vector<std::string> side = texts(v ? a.validation : a.train);
    EXPECT_EQ(std::count(side.begin(), side.end(), t[i]), 2) << i;
  }
  // The rule spelled out, and the input order kept.
  size_t k = 0;
  for (const std::string& s : t) {
    if (text_hash(s) % 1000000 < 100000) {
      ASSERT_LT(k, a.validation.size());
      EXPECT_EQ(a.validation[k++].text, s);
    }
  }
  EXPECT_EQ(k, a.validation.size());
  // A larger fraction only moves documents into validation.
  const TextSplit c = split_documents(docs_of(t), 0.3);
  EXPECT_GT(c.validation.size(), a.validation.size());
  for (const auto& d : a.validation) EXPECT_TRUE(is_validation_document(d.text, 0.3));
  for (const double f : {0.0, 1.0, -0.5, 2.0, std::nan("")}) {
    EXPECT_THAT(text_error([&] { split_documents(docs_of({"a\n"}), f); }),
                HasSubstr("validation_fraction must be in (0, 1)"))
        << f;
  }
}

// ---- vocabulary
// ----------------------------------------------------------------------------------

TEST(TextVocab, EncodesAndDecodesMultiByteCharacters) {
  const std::string text =
      "h\xC3\xA9llo w\xC3\xB6rld \xE2\x82\xAC \xF0\x9D\x84\x9E\t\n";  // é ö € 𝄞
  const Vocabulary v = Vocabulary::from_documents(docs_of({text, "zz\n"}));
  // Distinct code points in ascending order.
  const std::vector<char32_t> want = {U'\t', U'\n', U' ', U'd', U'h', U'l',   U'o',
                                      U'r',  U'w',  U'z', 0xE9, 0xF6, 0x20AC, 0x1D11E};
  EXPECT_EQ(v.chars(), want);
  EXPECT_EQ(v.size(), 14);
  const std::vector<int64_t> ids = v.encode(text, "the text");
  EXPECT_EQ(ids.size(), 17u);  // characters, not bytes
  EXPECT_EQ(ids[1], 10);       // é
  EXPECT_EQ(ids[12], 12);      // €
  EXPECT_EQ(ids[14], 13);      // 𝄞
  EXPECT_EQ(v.decode(ids), text);
  EXPECT_EQ(v.id(0x20AC), 12);
  EXPECT_EQ(v.id(U'q'), -1);
  EXPECT_EQ(v.id(0x10FFFF), -1);
  EXPECT_THAT(text_error([&] {
                v.decode({0, 14});
              }),
              AllOf(HasSubstr("id 14 at position 1"), HasSubstr("14 characters")));
  EXPECT_THAT(text_error([&] { v.decode({-1}); }), HasSubstr("id -1"));
  EXPECT_THAT(text_error([&] { v.encode("ok\xC3", "the prompt"); }),
              AllOf(HasSubstr("the prompt"), HasSubstr("invalid UTF-8"), HasSubstr("truncated")));
  EXPECT_TRUE(v.encode("", "empty").empty());
  EXPECT_EQ(v.decode({}), "");
}

TEST(TextVocab, StoredFormRoundTrips) {
  const Vocabulary v = Vocabulary::from_documents(docs_of({"ab\xC3\xA9\xF0\x9F\x98\x80\x07\n"}));
  const std::string stored = v.to_string();
  EXPECT_EQ(stored, "\x07\nab\xC3\xA9\xF0\x9F\x98\x80");
  const Vocabulary w = Vocabulary::from_string(stored, "the checkpoint's vocabulary");
  EXPECT_EQ(w.chars(), v.chars());
  EXPECT_EQ(w.to_string(), stored);
  // Any order: ids follow the stored form.
  const Vocabulary z = Vocabulary::from_string("ba\n", "v");
  EXPECT_EQ(z.encode("ab\n", "t"), (std::vector<int64_t>{1, 0, 2}));
  EXPECT_EQ(z.to_string(), "ba\n");
  EXPECT_THAT(text_error([] {
                Vocabulary::from_string(
                    "ab\xC3\xA9"
                    "c\xC3\xA9",
                    "the vocabulary");
              }),
              AllOf(HasSubstr("the vocabulary"), HasSubstr("'\xC3\xA9'"), HasSubstr("twice"),
                    HasSubstr("characters 3 and 5")));
  EXPECT_THAT(text_error([] { Vocabulary::from_string("", "the vocabulary"); }),
              AllOf(HasSubstr("the vocabulary"), HasSubstr("empty")));
  EXPECT_THAT(
      text_error([] { Vocabulary::from_string("ab\xED\xA0\x80", "config key vocabulary"); }),
      AllOf(HasSubstr("config key vocabulary"), HasSubstr("surrogate")));
  EXPECT_EQ(Vocabulary().size(), 0);
}

TEST(TextVocab, CharactersOutsideTheVocabularyAreAllListed) {
  const Vocabulary v = Vocabulary::from_string("abc \n", "v");
  const std::string prompt = "abXc Y\xC3\xA9\x07XZ\t\xC2\x85";
  EXPECT_EQ(v.missing(prompt),
            (std::vector<std::string>{"X", "Y", "\xC3\xA9", "\x07", "Z", "\t", "\xC2\x85"}));
  EXPECT_THAT(text_error([&] { v.encode(prompt, "the prompt"); }),
              AllOf(HasSubstr("the prompt has 7 characters outside the vocabulary of 5"),
                    HasSubstr("'X', 'Y', '\xC3\xA9', U+0007, 'Z', U+0009, U+0085")));
  EXPECT_THAT(text_error([&] { v.encode("aQ", "the prompt"); }),
              HasSubstr("the prompt has 1 character outside"));
  std::string many;
  for (char c = 'A'; c <= 'Z'; ++c) many += c;
  EXPECT_THAT(text_error([&] { v.encode(many, "the prompt"); }),
              AllOf(HasSubstr("26 characters"), HasSubstr("'T'"), HasSubstr("and 6 more")));
  EXPECT_TRUE(v.missing("cab \n").empty());
}

TEST(TextVocab, DocumentStreamsSeparateDocumentsWithABlankLine) {
  const auto docs = docs_of({"ab\n", "b\n\n", "ba\n"});
  const Vocabulary v = Vocabulary::from_documents(docs);
  ASSERT_EQ(v.to_string(), "\nab");
  EXPECT_EQ(encode_documents(v, docs, "the split"),
            (std::vector<int64_t>{1, 2, 0, 0, 2, 0, 0, 0, 2, 1, 0, 0}));
  EXPECT_EQ(v.decode(encode_documents(v, docs, "the split")), "ab\n\nb\n\n\nba\n\n");
  EXPECT_TRUE(encode_documents(v, {}, "nothing").empty());
  EXPECT_THAT(text_error([&] {
                encode_documents(v, docs_of({"abc\n", "d\xC3\xA9\n"}), "the split");
              }),
              AllOf(HasSubstr("the split"), HasSubstr("3 characters are outside"),
                    HasSubstr("'c', 'd', '\xC3\xA9'")));
  // The '\n' after each document needs an id too.
  const Vocabulary no_newline = Vocabulary::from_string("ab", "v");
  EXPECT_THAT(text_error([&] { encode_documents(no_newline, docs_of({"ab"}), "the split"); }),
              AllOf(HasSubstr("1 character is outside"), HasSubstr("U+000A")));
}

TEST(TextVocab, LoadTextDataSplitsAndChecksAGivenVocabulary) {
  TempDir dir("text_load");
  std::string a;
  for (int i = 0; i < 300; ++i)
    a += fmt::format("fortune {} says {}\n%\n", i, i % 7 ? "hi" : "h\xC3\xA9");
  put(dir / "a.txt", a);
  put(dir / "b.txt", "Zebra\n");
  const TextData d = load_text_data(dir.path.string(), {});
  EXPECT_EQ(d.train_documents + d.validation_documents, 301);
  EXPECT_GT(d.validation_documents, 10);
  EXPECT_GT(d.train_documents, 200);
  // Made from the whole corpus: 'Z' has an id wherever its document went.
  EXPECT_GE(d.vocab.id(U'Z'), 0);
  EXPECT_GE(d.vocab.id(0xE9), 0);
  EXPECT_EQ(d.vocab.chars(),
            Vocabulary::from_documents(read_text_corpus(dir.path.string())).chars());
  int64_t chars = 0;
  for (const auto& doc : read_text_corpus(dir.path.string())) {
    chars += static_cast<int64_t>(d.vocab.encode(doc.text, doc.source).size()) + 1;
  }
  EXPECT_EQ(static_cast<int64_t>(d.train.size() + d.validation.size()), chars);
  // The same vocabulary given back: the same streams.
  TextDataOptions o;
  o.vocabulary = d.vocab.to_string();
  const TextData e = load_text_data(dir.path.string(), o);
  EXPECT_EQ(e.train, d.train);
  EXPECT_EQ(e.validation, d.validation);
  // A vocabulary lacking characters of the corpus: listed, with the folder.
  o.vocabulary = "\n fortunesayhi0123456789";
  EXPECT_THAT(text_error([&] { load_text_data(dir.path.string(), o); }),
              AllOf(HasSubstr(dir.path.string()), HasSubstr("lacks 3 characters"),
                    HasSubstr("'\xC3\xA9', 'Z', 'b'")));
  o.vocabulary = "aa";
  EXPECT_THAT(text_error([&] { load_text_data(dir.path.string(), o); }), HasSubstr("twice"));
  // One document: one split is empty.
  TempDir one("text_one");
  put(one / "a.txt", "only one\n");
  EXPECT_THAT(text_error([&] { load_text_data(one.path.string(), {}); }),
              AllOf(HasSubstr("split is empty"), HasSubstr("of the 1 documents")));
  TextDataOptions bad;
  bad.validation_fraction = 1.5;
  EXPECT_THAT(text_error([&] { load_text_data(dir.path.string(), bad); }),
              HasSubstr("validation_fraction must be in (0, 1), got 1.5"));
}

// ---- windows
// -------------------------------------------------------------------------------------

std::vector<std::vector<int64_t>> epoch_starts(TextWindowLoader& l, int64_t epoch) {
  std::vector<std::vector<int64_t>> out;
  l.start_epoch(epoch);
  Batch b;
  while (l.next(b)) {
    std::vector<int64_t> s;
    for (int64_t r = 0; r < b.x.size(0); ++r) s.push_back(b.x.data<int64_t>()[r * b.x.size(1)]);
    out.push_back(s);
  }
  return out;
}

TEST(TextWindows, RandomWindowsAreSeededAndYIsXShiftedByOne) {
  const int64_t n = 50, t = 8;
  const std::vector<int64_t> tokens = iota_tokens(n);  // token i is i: x reveals the start
  TextWindowOptions o;
  o.context = t;
  o.batch_size = 4;
  o.batches_per_epoch = 200;
  o.seed = 7;
  TextWindowLoader l(tokens, o, "training");
  EXPECT_EQ(l.num_batches(), 200);
  EXPECT_EQ(l.num_samples(), 800);
  Batch b;
  l.start_epoch(0);
  std::set<int64_t> starts;
  int64_t k = 0;
  while (l.next(b)) {
    ASSERT_EQ(b.index, k);
    ASSERT_EQ(b.x.dtype(), DType::i64);
    ASSERT_EQ(b.x.shape(), (Shape{4, t}));
    ASSERT_EQ(b.y.dtype(), DType::i64);
    ASSERT_EQ(b.y.shape(), (Shape{4 * t}));
    const int64_t* x = b.x.data<int64_t>();
    const int64_t* y = b.y.data<int64_t>();
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t s = x[r * t];
      ASSERT_EQ(s, l.window_start(0, k * 4 + r));
      ASSERT_GE(s, 0);
      ASSERT_LE(s, n - t - 1);
      starts.insert(s);
      for (int64_t j = 0; j < t; ++j) {
        ASSERT_EQ(x[r * t + j], s + j);
        ASSERT_EQ(y[r * t + j], s + j + 1);  // the character after x[r, j]
      }
    }
    ++k;
  }
  EXPECT_EQ(k, 200);
  // Uniform over [0, N - T - 1]: 800 draws reach every one of the 42 starts, the ends included.
  EXPECT_EQ(starts.size(), static_cast<size_t>(n - t));
  EXPECT_EQ(*starts.begin(), 0);
  EXPECT_EQ(*starts.rbegin(), n - t - 1);
  // Same seed and epoch: the same batches (also from a new loader, and after another epoch).
  TextWindowLoader l2(tokens, o, "training");
  const auto e0 = epoch_starts(l, 0), e1 = epoch_starts(l, 1);
  EXPECT_EQ(epoch_starts(l2, 0), e0);
  EXPECT_EQ(epoch_starts(l2, 1), e1);
  EXPECT_EQ(epoch_starts(l, 0), e0);
  EXPECT_NE(e0, e1);
  o.seed = 8;
  TextWindowLoader l3(tokens, o, "training");
  EXPECT_NE(epoch_starts(l3, 0), e0);
  // Batches own their tensors.
  l.start_epoch(0);
  Batch first, second;
  ASSERT_TRUE(l.next(first));
  const std::vector<int64_t> kept(first.x.data<int64_t>(), first.x.data<int64_t>() + 4 * t);
  ASSERT_TRUE(l.next(second));
  EXPECT_EQ(std::vector<int64_t>(first.x.data<int64_t>(), first.x.data<int64_t>() + 4 * t), kept);
  // The smallest text: one start.
  const std::vector<int64_t> tiny = iota_tokens(t + 1);
  TextWindowLoader lt(tiny, o, "training");
  for (const auto& batch : epoch_starts(lt, 3)) {
    for (const int64_t s : batch) EXPECT_EQ(s, 0);
  }
}

TEST(TextWindows, SequentialWindowsCoverTheStreamOnceAndRespectTheLimit) {
  const int64_t n = 50, t = 8;
  const std::vector<int64_t> tokens = iota_tokens(n);
  TextWindowOptions o;
  o.context = t;
  o.batch_size = 4;
  o.random = false;
  TextWindowLoader l(tokens, o, "validation");
  // Windows at 0, 8, ..., 40 (40 + 8 + 1 <= 50): six, in batches of 4 and 2.
  EXPECT_EQ(l.num_samples(), 6);
  EXPECT_EQ(l.num_batches(), 2);
  const auto e = epoch_starts(l, 0);
  EXPECT_EQ(e, (std::vector<std::vector<int64_t>>{{0, 8, 16, 24}, {32, 40}}));
  EXPECT_EQ(epoch_starts(l, 5), e);
  // Every predicted position 1..48 exactly once.
  std::vector<int> seen(static_cast<size_t>(n), 0);
  l.start_epoch(0);
  Batch b;
  while (l.next(b)) {
    for (int64_t i = 0; i < b.y.numel(); ++i) ++seen[static_cast<size_t>(b.y.data<int64_t>()[i])];
    ASSERT_EQ(b.y.numel(), b.x.size(0) * t);
  }
  for (int64_t p = 0; p < n; ++p)
    EXPECT_EQ(seen[static_cast<size_t>(p)], p >= 1 && p <= 48 ? 1 : 0) << p;
  // limit caps the windows.
  o.limit = 5;
  TextWindowLoader lim(tokens, o, "validation");
  EXPECT_EQ(lim.num_samples(), 5);
  EXPECT_EQ(epoch_starts(lim, 0), (std::vector<std::vector<int64_t>>{{0, 8, 16, 24}, {32}}));
  o.limit = 100;
  EXPECT_EQ(TextWindowLoader(tokens, o, "validation").num_samples(), 6);
  // Exactly T + 1 tokens: one window; next() starts epoch 0 by itself.
  o.limit = 0;
  const std::vector<int64_t> tiny = iota_tokens(t + 1);
  TextWindowLoader lt(tiny, o, "validation");
  EXPECT_EQ(lt.num_samples(), 1);
  ASSERT_TRUE(lt.next(b));
  EXPECT_EQ(b.y.data<int64_t>()[t - 1], t);
  EXPECT_FALSE(lt.next(b));
}

TEST(TextWindows, BadOptionsAreErrors) {
  const std::vector<int64_t> tokens = iota_tokens(10);
  TextWindowOptions o;
  o.context = 10;
  EXPECT_THAT(
      text_error([&] { TextWindowLoader(tokens, o, "validation"); }),
      HasSubstr("the validation text has 10 characters; a context of 10 needs at least 11"));
  o.context = 128;
  const std::vector<int64_t> none;
  EXPECT_THAT(text_error([&] { TextWindowLoader(none, o, "training"); }),
              HasSubstr("the training text has 0 characters; a context of 128 needs at least 129"));
  o.context = 0;
  EXPECT_THAT(text_error([&] { TextWindowLoader(tokens, o, "training"); }),
              HasSubstr("context must be at least 1"));
  o.context = 4;
  o.batch_size = 0;
  EXPECT_THAT(text_error([&] { TextWindowLoader(tokens, o, "training"); }),
              HasSubstr("batch size must be at least 1"));
  o.batch_size = 2;
  o.batches_per_epoch = 0;
  EXPECT_THAT(text_error([&] { TextWindowLoader(tokens, o, "training"); }),
              HasSubstr("batches_per_epoch"));
  o.random = false;
  o.limit = -1;
  EXPECT_THAT(text_error([&] { TextWindowLoader(tokens, o, "training"); }), HasSubstr("limit"));
  o.limit = 0;
  o.batch_size = std::numeric_limits<int64_t>::max() / 2;
  EXPECT_THAT(text_error([&] { TextWindowLoader(tokens, o, "training"); }), HasSubstr("too large"));
}

// ---- the real corpus
// -----------------------------------------------------------------------------

TEST(TextCorpus, TheFortunesCorpus) {
  const std::string dir = text_corpus_default_dir();
  if (!fs::is_directory(dir)) {
    GTEST_SKIP() << dir << " does not exist (scripts/make_text_corpus.sh writes it)";
  }
  const std::vector<TextDocument> docs = read_text_corpus(dir);
  // meta.json counts the documents as the reader does.
  std::ifstream meta(fs::path(dir) / "meta.json");
  const std::string m((std::istreambuf_iterator<char>(meta)), std::istreambuf_iterator<char>());
  const size_t at = m.find("\"documents\": ");
  ASSERT_NE(at, std::string::npos) << m;
  EXPECT_EQ(std::stoll(m.substr(at + 13)), static_cast<long long>(docs.size()));
  EXPECT_GT(docs.size(), 10000u);
  for (const auto& d : docs) ASSERT_EQ(d.text.back(), '\n') << d.source;
  const TextData data = load_text_data(dir, {});
  const double share = static_cast<double>(data.validation_documents) /
                       static_cast<double>(data.train_documents + data.validation_documents);
  EXPECT_NEAR(share, 0.1, 0.02);
  EXPECT_GT(data.vocab.size(), 60);
  EXPECT_LT(data.vocab.size(), 400);
  for (const char32_t c : {U'a', U'Z', U' ', U'\n', U'%', U'0'}) EXPECT_GE(data.vocab.id(c), 0);
  EXPECT_EQ(Vocabulary::from_string(data.vocab.to_string(), "v").chars(), data.vocab.chars());
  // The training stream starts with the first training document.
  const TextSplit split = split_documents(docs, 0.1);
  const std::string& first = split.train.front().text;
  const std::vector<int64_t> head(
      data.train.begin(),
      data.train.begin() + static_cast<std::ptrdiff_t>(data.vocab.encode(first, "x").size()));
  EXPECT_EQ(data.vocab.decode(head), first);
  std::cout << "fortunes: " << docs.size() << " documents, train " << data.train_documents
            << " documents / " << data.train.size() << " characters, validation "
            << data.validation_documents << " / " << data.validation.size()
            << " characters, vocabulary " << data.vocab.size() << "\n";
}

}  // namespace
}  // namespace mel::data::text_testing
