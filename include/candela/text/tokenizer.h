// WordPiece tokenisation, as BERT does it (Wu et al. 2016, "Google's Neural Machine Translation
// System", section 4.1; Devlin et al. 2019; HuggingFace's BertTokenizer): a basic pass (optional
// lowercasing, split on whitespace and around every ASCII punctuation character), then each word
// greedily, longest match first, into vocabulary pieces where every piece after the first carries
// the "##" prefix; a word with no such split becomes [UNK]. A sentence is encoded as
// [CLS] pieces... [SEP] and padded with [PAD] to the model's length.
//
// Differences from BertTokenizer, on purpose and documented: no accent stripping, no CJK character
// splitting, non-ASCII bytes count as letters.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace candela {

// One encoded sentence: ids, their vocabulary strings, and which word each piece belongs to.
struct Encoding {
  std::vector<int64_t> ids;
  std::vector<std::string> tokens;
  std::vector<int64_t> word_of_token;  // index into `words`; -1 for special tokens ([CLS], [SEP], [PAD])
  std::vector<std::string> words;      // the words, pieces merged ("un ##believ ##able" -> "unbelievable")
};

// The "tokenizer" object of a model's sidecar:
//   {"type": "wordpiece", "vocab": "vocab.txt", "lowercase": true, "max_length": 128}
// `vocab` is relative to the sidecar's folder.
struct TokenizerConfig {
  std::string type = "wordpiece";
  std::string vocab;        // path to vocab.txt (one piece per line; the line number is its id)
  bool lowercase = true;
  int64_t max_length = 0;   // 0: the model's input length
  static TokenizerConfig from_json(const nlohmann::json& j, const std::string& base_dir, const std::string& source);
  nlohmann::json to_json() const;
};

class WordPieceTokenizer {
 public:
  // The vocabulary must hold [PAD], [UNK], [CLS] and [SEP].
  WordPieceTokenizer(std::vector<std::string> vocab, bool lowercase = true);
  // Reads vocab.txt; IoError / ParseError name the file.
  static WordPieceTokenizer from_config(const TokenizerConfig& config);

  // The basic pass alone: words and punctuation marks.
  std::vector<std::string> basic_tokenize(const std::string& text) const;
  // One word into pieces (["[UNK]"] when it has no split, or is longer than 100 bytes).
  std::vector<std::string> wordpiece(const std::string& word) const;
  // [CLS] pieces [SEP] [PAD]...: exactly `length` ids. InvalidArgument when the sentence needs more.
  Encoding encode(const std::string& text, int64_t length) const;
  // Ids back to tokens and words ([PAD] and the other bracketed specials belong to no word).
  Encoding decode(const std::vector<int64_t>& ids) const;

  int64_t id(const std::string& token) const;  // -1 when absent
  const std::string& token(int64_t id) const;  // InvalidArgument when out of range
  int64_t pad_id() const { return pad_; }
  int64_t size() const { return static_cast<int64_t>(vocab_.size()); }

 private:
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> index_;
  bool lowercase_;
  int64_t pad_, unk_, cls_, sep_;
};

}  // namespace candela
