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
//
// SentencePiece (Kudo & Richardson 2018, "SentencePiece: A simple and language independent subword
// tokenizer and detokenizer"; unigram LM: Kudo 2018, "Subword Regularization"; BPE models too), read
// from its .model file by Debian's libsentencepiece: the processor normalises the text, replaces
// spaces with "\u2581" (the meta symbol "▁") and segments it; Candela takes its pieces and ids as
// they are (exactly what python's sp.encode(text, out_type=int/str) gives). A piece that starts
// with "▁" starts a new word. Special tokens: the model's <s> before and </s> after the sentence
// when the model defines them (bos_id / eos_id >= 0), each switched off by "add_bos": false /
// "add_eos": false, or replaced by another piece with "bos_token" / "eos_token", in the sidecar.
// The default gives what HuggingFace's tokenizers do for T5 (its model has no <s>: "... </s>");
// for Llama (HF adds <s> only) write "add_eos": false; for ALBERT (no bos/eos in its model; HF
// writes [CLS] ... [SEP], control pieces) write "bos_token": "[CLS]", "eos_token": "[SEP]".
// Padding uses the model's pad id, or the sidecar's "pad_token". Differences, on purpose and
// documented: no sampling (subword regularisation) and no truncation; encode's words are the
// original text of their pieces (unknown characters included), decode's words come from the ids
// (an unknown piece reads as "⁇", and normalisation, e.g. NFKC, shows). Optional at build time: without libsentencepiece-dev
// a sentencepiece sidecar throws UnsupportedModel saying how to rebuild. The library is reached
// through a small shim loaded at run time (src/candela/detail/sentencepiece_api.h says why: its
// bundled protobuf clashes with LibTorch's).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace candela {
namespace detail {
class SpmModel;
}

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
//   {"type": "sentencepiece", "model": "spm.model", "add_bos": true, "add_eos": true, "max_length": 64}
//   {"type": "sentencepiece", "model": "spiece.model", "bos_token": "[CLS]", "eos_token": "[SEP]"}  (ALBERT)
// `vocab` (for sentencepiece also spelled `model`) is relative to the sidecar's folder.
struct TokenizerConfig {
  std::string type = "wordpiece";  // wordpiece, bpe or sentencepiece
  std::string vocab;        // wordpiece: vocab.txt (one piece per line; the line number is its id); bpe: tokenizer.json;
                            // sentencepiece: the .model file
  bool lowercase = true;    // wordpiece only
  int64_t max_length = 0;   // 0: the model's input length
  std::string pad_token;    // bpe: the padding token; empty: the first of <pad>, [PAD], <|endoftext|> it has;
                            // sentencepiece: empty: the model's pad id
  bool add_bos = true;      // sentencepiece: <s> first, when the model defines one
  bool add_eos = true;      // sentencepiece: </s> last, when the model defines one
  std::string bos_token, eos_token;  // sentencepiece: the pieces to use instead of the model's <s> / </s>
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
  virtual int64_t pad_id() const = 0;  // the padding token's id; -1 when it pads with none
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
  int64_t pad_id() const override { return pad_; }
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
  int64_t pad_id() const override { return pad_; }
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

// Reads a SentencePiece .model (needs Candela built with libsentencepiece-dev: available()).
class SentencePieceTokenizer : public Tokenizer {
 public:
  // `model`: a serialized SentencePiece ModelProto (a .model file's bytes); `source` names it in
  // errors. ParseError when it is not one, or when a token named is not one of its pieces;
  // UnsupportedModel when Candela was built without SentencePiece.
  SentencePieceTokenizer(const std::string& model, const std::string& source, bool add_bos = true,
                         bool add_eos = true, const std::string& pad_token = "", const std::string& bos_token = "",
                         const std::string& eos_token = "");
  static SentencePieceTokenizer from_config(const TokenizerConfig& config);
  // Whether this build links libsentencepiece.
  static bool available();

  // <s> pieces </s> <pad>...: exactly `length` ids (no padding when length <= 0).
  Encoding encode(const std::string& text, int64_t length) const override;
  Encoding decode(const std::vector<int64_t>& ids) const override;
  int64_t id(const std::string& token) const override;  // -1 when absent
  const std::string& token(int64_t id) const override;
  int64_t size() const override;
  int64_t pad_id() const override { return pad_; }

 private:
  std::shared_ptr<const detail::SpmModel> sp_;
  std::string source_;
  int64_t bos_ = -1, eos_ = -1, pad_ = -1;  // -1: none
};

}  // namespace candela
