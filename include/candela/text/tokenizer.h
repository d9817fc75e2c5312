// WordPiece tokenisation, as BERT does it (Wu et al. 2016, "Google's Neural Machine Translation
// System", section 4.1; Devlin et al. 2019; HuggingFace's BertTokenizer): a basic pass (optional
// lowercasing, split on whitespace and around every ASCII punctuation character), then each word
// greedily, longest match first, into vocabulary pieces where every piece after the first carries
// the "##" prefix; a word with no such split becomes [UNK]. A sentence is encoded as
// [CLS] pieces... [SEP] and padded with [PAD] to the model's length.
//
// Differences from BertTokenizer, on purpose and documented: no accent stripping, no CJK character
// splitting, non-ASCII bytes count as letters.
//
// Byte-level BPE, as GPT-2 and RoBERTa do it (Radford et al. 2019, section 2.2; Sennrich et al.
// 2016; HuggingFace tokenizers' ByteLevel pre-tokenizer + BPE model), read from a tokenizer.json:
// the text is split by GPT-2's pattern ('s|'t|'re|'ve|'m|'ll|'d| ?letters| ?digits| ?other|
// whitespace not before a non-space|whitespace), each piece's bytes are mapped to printable
// characters (bytes_to_unicode: a space is "Ġ") and merged pair by pair, lowest merge rank first.
// The special tokens around a sentence come from its post_processor (RobertaProcessing,
// BertProcessing, or a TemplateProcessing "single" template); none for ByteLevel. Difference, on
// purpose and documented: non-ASCII bytes count as letters (the pattern's \p{L}), so a non-ASCII
// digit or punctuation mark joins the letters around it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
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
//   {"type": "bpe", "vocab": "tokenizer.json", "pad_token": "<pad>", "max_length": 64}
// `vocab` is relative to the sidecar's folder.
struct TokenizerConfig {
  std::string type = "wordpiece";  // wordpiece or bpe
  std::string vocab;        // wordpiece: vocab.txt (one piece per line; the line number is its id); bpe: tokenizer.json
  bool lowercase = true;    // wordpiece only
  int64_t max_length = 0;   // 0: the model's input length
  std::string pad_token;    // bpe: the padding token; empty: the first of <pad>, [PAD], <|endoftext|> it has
  static TokenizerConfig from_json(const nlohmann::json& j, const std::string& base_dir, const std::string& source);
  nlohmann::json to_json() const;
};

// What every tokenizer does: text to ids (with the model's special tokens and padding), ids back
// to tokens and words.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Special tokens and pieces, padded to exactly `length` ids (no padding when length <= 0).
  // InvalidArgument when the sentence needs more.
  virtual Encoding encode(const std::string& text, int64_t length) const = 0;
  // Ids back to tokens and words (special tokens belong to no word).
  virtual Encoding decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t id(const std::string& token) const = 0;  // -1 when absent
  virtual const std::string& token(int64_t id) const = 0;  // InvalidArgument when out of range
  virtual int64_t size() const = 0;
  // The tokenizer a config names; IoError / ParseError name the file.
  static std::unique_ptr<Tokenizer> from_config(const TokenizerConfig& config);
};

class WordPieceTokenizer : public Tokenizer {
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
  Encoding encode(const std::string& text, int64_t length) const override;
  // Ids back to tokens and words ([PAD] and the other bracketed specials belong to no word).
  Encoding decode(const std::vector<int64_t>& ids) const override;

  int64_t id(const std::string& token) const override;  // -1 when absent
  const std::string& token(int64_t id) const override;  // InvalidArgument when out of range
  int64_t pad_id() const { return pad_; }
  int64_t size() const override { return static_cast<int64_t>(vocab_.size()); }

 private:
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> index_;
  bool lowercase_;
  int64_t pad_, unk_, cls_, sep_;
};

class BpeTokenizer : public Tokenizer {
 public:
  // `json`: a HuggingFace tokenizer.json whose model is BPE with a ByteLevel pre-tokenizer.
  // ParseError names what is missing or not supported.
  explicit BpeTokenizer(const nlohmann::json& json, const std::string& pad_token = "");
  static BpeTokenizer from_config(const TokenizerConfig& config);

  // The pre-tokenizer alone: GPT-2's pattern, spaces kept ("a  b" -> "a", " ", " b").
  static std::vector<std::string> pre_tokenize(const std::string& text);
  // One piece (raw bytes) into vocabulary tokens, by the merges.
  std::vector<std::string> bpe(const std::string& piece) const;
  Encoding encode(const std::string& text, int64_t length) const override;
  Encoding decode(const std::vector<int64_t>& ids) const override;
  int64_t id(const std::string& token) const override;
  const std::string& token(int64_t id) const override;
  int64_t size() const override { return static_cast<int64_t>(vocab_.size()); }
  // A token's text as bytes ("Ġworld" -> " world"); special tokens as they are.
  std::string text_of(const std::string& token) const;

 private:
  std::vector<std::string> vocab_;  // by id (gaps filled with "")
  std::unordered_map<std::string, int64_t> index_;
  std::unordered_map<std::string, int64_t> ranks_;  // "a b" -> merge rank
  std::vector<std::string> prefix_, suffix_;        // special tokens around a sentence
  std::unordered_map<std::string, bool> special_;
  bool add_prefix_space_ = false;
  int64_t pad_ = -1, unk_ = -1;
};

}  // namespace candela
