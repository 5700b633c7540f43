// Text corpora for next-character language modelling: a folder of UTF-8 text files whose
// documents are separated by lines "%" (the layout scripts/make_text_corpus.sh writes from
// Debian's `fortunes`), a deterministic split by document, the character vocabulary (Unicode code
// points), token streams of character ids and a loader of windows of them (a BatchSource).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/batch.h"

namespace mel::data {

inline constexpr const char* kTextCorpusName = "fortunes";

// $MEL_DATA_HOME/fortunes, else $HOME/.local/share/mel/fortunes (the script's default).
std::string text_corpus_default_dir();

struct TextDocument {
  std::string text;    // valid UTF-8, no NUL; its lines joined with '\n', plus a final '\n'
  std::string source;  // "file.txt:N": the N-th (1-based) document kept from the file
  int64_t line = 0;    // the 1-based line of the file where the document starts
};

// One file's bytes (`name` only names it in messages). The file must be valid UTF-8 (overlong
// encodings, surrogates, code points above U+10FFFF and truncated sequences are errors naming the
// file, line and byte offset) without NUL bytes. Lines end at '\n' (a last line may lack it); a
// line that is exactly "%" separates documents; a document's text is its lines joined with '\n',
// plus a final '\n'. Documents holding only whitespace (space, tab, '\n', '\r', '\v', '\f') are
// dropped, so leading, trailing and repeated "%" lines give no empty documents. A line "%\r" (a
// separator with a CRLF line ending) is an error that asks for LF line endings; other '\r' are
// ordinary characters. A file without any document gives an empty list.
std::vector<TextDocument> parse_text_corpus(std::string_view bytes, const std::string& name);

// Every regular file of `dir` whose name ends in ".txt" (other files, such as meta.json, are
// ignored), in name order, through parse_text_corpus. Errors: the folder is missing (the message
// names scripts/make_text_corpus.sh and the Debian package `fortunes`), it has no .txt file, no
// file has a document, a file is not valid UTF-8 or holds a NUL byte.
std::vector<TextDocument> read_text_corpus(const std::string& dir);

// FNV-1a 64-bit over the bytes (offset basis 14695981039346656037, prime 1099511628211).
uint64_t text_hash(std::string_view bytes);

// The split rule: a document goes to validation iff text_hash(text) % 1000000 < fraction * 1000000
// (the comparison in double precision), so identical documents land in the same split and the
// rule is reproducible in a line of Python. `fraction` must be in (0, 1).
bool is_validation_document(std::string_view text, double validation_fraction);

struct TextSplit {
  std::vector<TextDocument> train, validation;  // each in the order of the input
};
TextSplit split_documents(std::vector<TextDocument> docs, double validation_fraction);

// A character vocabulary: id i is the i-th character (Unicode code point) of its list.
class Vocabulary {
 public:
  Vocabulary() = default;  // empty

  // The distinct code points of the documents' text in ascending order. A document that is not
  // valid UTF-8 is an error naming its source.
  static Vocabulary from_documents(const std::vector<TextDocument>& docs);
  // The stored form: the characters in id order as UTF-8 (any order; ids follow it). Errors,
  // naming `what`: invalid UTF-8, a character given twice, no character at all.
  static Vocabulary from_string(std::string_view chars, const std::string& what);
  // The stored form (from_string(v.to_string(), ...) gives v back).
  std::string to_string() const;

  int64_t size() const { return static_cast<int64_t>(chars_.size()); }
  const std::vector<char32_t>& chars() const { return chars_; }
  // The id of a code point, -1 when it is not in the vocabulary.
  int64_t id(char32_t c) const;

  // The id of each character of `text`. Errors, naming `what` (e.g. "the prompt"): invalid UTF-8,
  // characters outside the vocabulary (all listed, see describe_characters).
  std::vector<int64_t> encode(std::string_view text, const std::string& what) const;
  // The characters of ids as UTF-8; an id outside [0, size()) is an error.
  std::string decode(const std::vector<int64_t>& ids) const;
  // The distinct characters of `text` (as UTF-8) that are not in the vocabulary, in order of first
  // appearance. Invalid UTF-8 is an error naming `what`.
  std::vector<std::string> missing(std::string_view text, const std::string& what = "text") const;

 private:
  std::vector<char32_t> chars_;
  std::vector<std::string> utf8_;  // chars_ as UTF-8, for decode
  int32_t ascii_[128] = {};        // id + 1 of each ASCII character, 0 when absent
  std::unordered_map<char32_t, int64_t> others_;
  void add(char32_t c);
};

// A list of characters for a message: printable ones quoted ('é'), others as U+XXXX (U+000A); at
// most `max_listed`, then "and N more".
std::string describe_characters(const std::vector<std::string>& chars, size_t max_listed = 20);

// A split's token stream: the characters of each document followed by one extra '\n' (a blank
// line between documents), documents in order. Characters outside the vocabulary are an error
// that lists them all and names `what` (e.g. "the validation split of DIR").
std::vector<int64_t> encode_documents(const Vocabulary& v, const std::vector<TextDocument>& docs,
                                      const std::string& what);

struct TextDataOptions {
  double validation_fraction = 0.1;  // in (0, 1), see is_validation_document
  // The vocabulary's stored form (Vocabulary::to_string); empty: made from the whole corpus.
  std::string vocabulary;
};

struct TextData {
  Vocabulary vocab;
  std::vector<int64_t> train, validation;  // token streams (encode_documents)
  int64_t train_documents = 0, validation_documents = 0;
};

// read_text_corpus, split_documents, the vocabulary and both token streams. Without a given
// vocabulary it is made from every document of the corpus (both splits: a character that only
// validation holds must still have an id, though the model never sees it as a training target).
// Errors: those of read_text_corpus, an empty split (naming the fraction and the number of
// documents), a given vocabulary that is invalid or lacks characters of the corpus (listing them
// and naming the folder).
TextData load_text_data(const std::string& dir, const TextDataOptions& o);

struct TextWindowOptions {
  int64_t context = 128;  // T, characters per window
  int64_t batch_size = 64;
  uint64_t seed = 0;
  bool random = true;               // random windows (training), else sequential (evaluation)
  int64_t batches_per_epoch = 100;  // random only
  int64_t limit = 0;                // sequential only: at most this many windows (0 = all)
};

// Windows of a token stream as batches: x is i64 [B, T] with row b = tokens[s_b .. s_b + T), y is
// i64 [B * T], row-major, with y[b * T + t] = tokens[s_b + t + 1] (the character after x[b, t]).
// Batch::index is the batch's index in the epoch; every batch owns fresh tensors.
//   random: batches_per_epoch batches of batch_size windows; the start of window i = k * B + r
//     (batch k, row r) of `epoch` is a pure function of (seed, epoch, i): uniform over
//     [0, N - T - 1] (every start whose T targets exist), drawn without modulo bias from
//     SplitMix64.
//   sequential: windows start at 0, T, 2T, ... while start + T + 1 <= N (no overlap: each
//     predicted position counted once; the last N - 1 - W * T positions are not), at most `limit`
//     of them when limit > 0; batch_size windows per batch, the last batch may be smaller. The
//     same in every epoch.
class TextWindowLoader : public BatchSource {
 public:
  // Keeps a reference to `tokens`, which must outlive the loader. `what` names the text in errors
  // ("training", "validation"). Errors: context < 1, batch_size < 1, batches_per_epoch < 1
  // (random), limit < 0, and a text of N < T + 1 characters ("the training text has N characters;
  // a context of T needs at least T + 1").
  TextWindowLoader(const std::vector<int64_t>& tokens, TextWindowOptions o, std::string what);

  void start_epoch(int64_t epoch) override;
  // The next batch of the epoch; false at its end. Starts epoch 0 if no epoch was started.
  bool next(Batch& out) override;
  int64_t num_batches() const override { return num_batches_; }
  int64_t num_samples() const override { return num_windows_; }  // windows per epoch
  const TextWindowOptions& options() const { return opts_; }

  // The first token of window `i` (= k * batch_size + r) of `epoch`.
  int64_t window_start(int64_t epoch, int64_t i) const;

 private:
  const std::vector<int64_t>& tokens_;
  TextWindowOptions opts_;
  std::string what_;
  int64_t num_windows_ = 0, num_batches_ = 0;
  bool started_ = false;
  int64_t epoch_ = 0, cursor_ = 0;
};

}  // namespace mel::data
