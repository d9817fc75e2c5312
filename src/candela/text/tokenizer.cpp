#include "candela/text/tokenizer.h"

#include <cctype>
#include <filesystem>

#include "candela/core/error.h"
#include "candela/detail/text.h"
#include "candela/io/file.h"

#ifdef CANDELA_HAVE_SENTENCEPIECE
#include <dlfcn.h>

#include <cstdlib>

#include "candela/detail/sentencepiece_api.h"
#endif

namespace candela {
using detail::str_cat;

namespace {

constexpr size_t kMaxWordBytes = 100;  // BertTokenizer's max_input_chars_per_word

bool is_ascii_punct(unsigned char c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

bool is_special(const std::string& t) { return t.size() >= 3 && t.front() == '[' && t.back() == ']'; }

}  // namespace

TokenizerConfig TokenizerConfig::from_json(const nlohmann::json& j, const std::string& base_dir,
                                           const std::string& source) {
  TokenizerConfig c;
  auto malformed = [&](const std::exception& e) {
    return ParseError(str_cat(source, ": the \"tokenizer\" entry is malformed (", e.what(),
                              "). Expected {\"type\": \"wordpiece\", \"vocab\": \"vocab.txt\", \"lowercase\": true, "
                              "\"max_length\": 128}, {\"type\": \"bpe\", \"vocab\": \"tokenizer.json\"} or "
                              "{\"type\": \"sentencepiece\", \"model\": \"spm.model\", \"add_bos\": true, "
                              "\"add_eos\": true}."));
  };
  try {
    CANDELA_CHECK_T(ParseError, j.is_object(), "must be an object");
    if (j.contains("type")) c.type = j.at("type").get<std::string>();
  } catch (const std::exception& e) {
    throw malformed(e);
  }
  // The type first: a misspelt one is named as such, not as a missing field of another type.
  CANDELA_CHECK_T(ParseError, c.type == "wordpiece" || c.type == "bpe" || c.type == "sentencepiece", source,
                  ": tokenizer type '", c.type, "' is not supported; Candela reads WordPiece vocabularies "
                  "(\"type\": \"wordpiece\", a vocab.txt), byte-level BPE (\"type\": \"bpe\", a HuggingFace "
                  "tokenizer.json) and SentencePiece models (\"type\": \"sentencepiece\", a .model file). For other "
                  "tokenizers, give token ids as a .npy [N, L] instead.");
  try {
    if (c.type == "sentencepiece" && j.contains("model") && !j.contains("vocab")) {
      c.vocab = j.at("model").get<std::string>();  // "model" names a SentencePiece file more plainly
    } else {
      c.vocab = j.at("vocab").get<std::string>();
    }
    if (j.contains("lowercase")) c.lowercase = j.at("lowercase").get<bool>();
    if (j.contains("max_length")) c.max_length = j.at("max_length").get<int64_t>();
    if (j.contains("pad_token")) c.pad_token = j.at("pad_token").get<std::string>();
    if (j.contains("add_bos")) c.add_bos = j.at("add_bos").get<bool>();
    if (j.contains("add_eos")) c.add_eos = j.at("add_eos").get<bool>();
    if (j.contains("bos_token")) c.bos_token = j.at("bos_token").get<std::string>();
    if (j.contains("eos_token")) c.eos_token = j.at("eos_token").get<std::string>();
  } catch (const std::exception& e) {
    throw malformed(e);
  }
  CANDELA_CHECK_T(ParseError, c.type != "sentencepiece" || !j.contains("model") || !j.contains("vocab") ||
                  j["model"] == j["vocab"], source, ": the sentencepiece tokenizer names two files (\"model\": ",
                  j.value("model", nlohmann::json()).dump(), ", \"vocab\": ", j.value("vocab", nlohmann::json()).dump(),
                  "); give one.");
  CANDELA_CHECK_T(ParseError, c.max_length >= 0, source, ": tokenizer max_length must be >= 0, got ", c.max_length, ".");
  std::filesystem::path p(c.vocab);
  if (p.is_relative() && !base_dir.empty()) c.vocab = (std::filesystem::path(base_dir) / p).string();
  return c;
}

nlohmann::json TokenizerConfig::to_json() const {
  nlohmann::json j = {{"type", type}, {"vocab", vocab}, {"lowercase", lowercase}, {"max_length", max_length}};
  if (!pad_token.empty()) j["pad_token"] = pad_token;
  if (type == "sentencepiece") {
    j["add_bos"] = add_bos;
    j["add_eos"] = add_eos;
    if (!bos_token.empty()) j["bos_token"] = bos_token;
    if (!eos_token.empty()) j["eos_token"] = eos_token;
  }
  return j;
}

std::unique_ptr<Tokenizer> Tokenizer::from_config(const TokenizerConfig& config) {
  if (config.type == "bpe") return std::make_unique<BpeTokenizer>(BpeTokenizer::from_config(config));
  if (config.type == "sentencepiece")
    return std::make_unique<SentencePieceTokenizer>(SentencePieceTokenizer::from_config(config));
  return std::make_unique<WordPieceTokenizer>(WordPieceTokenizer::from_config(config));
}

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> vocab, bool lowercase)
    : vocab_(std::move(vocab)), lowercase_(lowercase) {
  for (size_t i = 0; i < vocab_.size(); ++i) index_.emplace(vocab_[i], static_cast<int64_t>(i));
  auto need = [&](const char* t) {
    const int64_t i = id(t);
    CANDELA_CHECK_T(ParseError, i >= 0, "the WordPiece vocabulary has no ", t,
                    " token; a BERT vocab.txt holds [PAD], [UNK], [CLS] and [SEP].");
    return i;
  };
  pad_ = need("[PAD]");
  unk_ = need("[UNK]");
  cls_ = need("[CLS]");
  sep_ = need("[SEP]");
}

WordPieceTokenizer WordPieceTokenizer::from_config(const TokenizerConfig& config) {
  const std::string text = read_file(config.vocab, 64 << 20);
  std::vector<std::string> vocab = detail::split(text, '\n');
  for (auto& v : vocab)
    if (!v.empty() && v.back() == '\r') v.pop_back();
  if (!vocab.empty() && vocab.back().empty()) vocab.pop_back();
  try {
    return WordPieceTokenizer(std::move(vocab), config.lowercase);
  } catch (const ParseError& e) {
    throw ParseError(str_cat("'", config.vocab, "': ", e.what()));
  }
}

std::vector<std::string> WordPieceTokenizer::basic_tokenize(const std::string& text) const {
  std::vector<std::string> words;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) words.push_back(std::move(cur));
    cur.clear();
  };
  for (unsigned char c : text) {
    if (std::isspace(c) || c == 0) {
      flush();
    } else if (is_ascii_punct(c)) {
      flush();
      words.emplace_back(1, static_cast<char>(c));
    } else if (c < 32 || c == 127) {
      // control characters are dropped, as BertTokenizer's _clean_text does
    } else {
      cur += lowercase_ && c < 128 ? static_cast<char>(std::tolower(c)) : static_cast<char>(c);
    }
  }
  flush();
  return words;
}

std::vector<std::string> WordPieceTokenizer::wordpiece(const std::string& word) const {
  if (word.size() > kMaxWordBytes) return {"[UNK]"};
  std::vector<std::string> pieces;
  size_t start = 0;
  while (start < word.size()) {
    size_t end = word.size();
    std::string found;
    for (; end > start; --end) {
      std::string sub = (start > 0 ? "##" : "") + word.substr(start, end - start);
      if (index_.count(sub)) {
        found = std::move(sub);
        break;
      }
    }
    if (found.empty()) return {"[UNK]"};
    pieces.push_back(std::move(found));
    start = end;
  }
  return pieces;
}

Encoding WordPieceTokenizer::encode(const std::string& text, int64_t length) const {
  Encoding e;
  e.words = basic_tokenize(text);
  e.tokens.push_back("[CLS]");
  e.word_of_token.push_back(-1);
  for (size_t w = 0; w < e.words.size(); ++w)
    for (auto& p : wordpiece(e.words[w])) {
      e.tokens.push_back(std::move(p));
      e.word_of_token.push_back(static_cast<int64_t>(w));
    }
  e.tokens.push_back("[SEP]");
  e.word_of_token.push_back(-1);
  CANDELA_CHECK(length <= 0 || static_cast<int64_t>(e.tokens.size()) <= length, "the text '",
                text.size() > 60 ? text.substr(0, 57) + "..." : text, "' is ", e.tokens.size(),
                " tokens long with [CLS] and [SEP], but the model takes ", length,
                ". Shorten it (Candela does not truncate silently).");
  while (length > 0 && static_cast<int64_t>(e.tokens.size()) < length) {
    e.tokens.push_back("[PAD]");
    e.word_of_token.push_back(-1);
  }
  for (const auto& t : e.tokens) e.ids.push_back(id(t) >= 0 ? id(t) : unk_);
  return e;
}

Encoding WordPieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  Encoding e;
  e.ids = ids;
  for (int64_t i : ids) {
    const std::string& t = token(i);
    e.tokens.push_back(t);
    if (is_special(t) && t != "[UNK]") {
      e.word_of_token.push_back(-1);
    } else if (t.rfind("##", 0) == 0 && !e.words.empty() && !e.word_of_token.empty() && e.word_of_token.back() >= 0) {
      e.words.back() += t.substr(2);
      e.word_of_token.push_back(static_cast<int64_t>(e.words.size()) - 1);
    } else {
      e.words.push_back(t);
      e.word_of_token.push_back(static_cast<int64_t>(e.words.size()) - 1);
    }
  }
  return e;
}

int64_t WordPieceTokenizer::id(const std::string& token) const {
  auto it = index_.find(token);
  return it == index_.end() ? -1 : it->second;
}

const std::string& WordPieceTokenizer::token(int64_t id) const {
  CANDELA_CHECK(id >= 0 && id < size(), "token id ", id, " is outside the vocabulary (", size(),
                " pieces); the ids do not belong to this model's vocab.txt.");
  return vocab_[static_cast<size_t>(id)];
}

// ---- byte-level BPE ------------------------------------------------------------------------

namespace {

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for code points
// 256, 257, ... in byte order; each as UTF-8.
const std::vector<std::string>& byte_symbols() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    auto utf8 = [](uint32_t cp) {
      std::string s;
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else if (cp < 0x800) {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        s += static_cast<char>(0xE0 | (cp >> 12));
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
      return s;
    };
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = utf8(printable ? b : next++);
    }
    return t;
  }();
  return table;
}

const std::unordered_map<std::string, unsigned char>& symbol_bytes() {
  static const std::unordered_map<std::string, unsigned char> m = [] {
    std::unordered_map<std::string, unsigned char> out;
    for (int b = 0; b < 256; ++b) out.emplace(byte_symbols()[static_cast<size_t>(b)], static_cast<unsigned char>(b));
    return out;
  }();
  return m;
}

enum class ByteClass { kLetter, kDigit, kSpace, kOther };
ByteClass byte_class(unsigned char c) {
  if (std::isalpha(c) || c >= 0x80) return ByteClass::kLetter;  // non-ASCII bytes: letters (documented)
  if (std::isdigit(c)) return ByteClass::kDigit;
  if (std::isspace(c)) return ByteClass::kSpace;
  return ByteClass::kOther;
}

// UTF-8 characters of a token string (each mapped byte is one character).
std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : 4;
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

// The special tokens a post_processor puts around one sentence.
void read_template(const nlohmann::json& pp, std::vector<std::string>& prefix, std::vector<std::string>& suffix,
                   const std::string& source) {
  if (pp.is_null()) return;
  const std::string type = pp.value("type", "");
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    prefix.push_back(pp.at("cls").at(0).get<std::string>());
    suffix.push_back(pp.at("sep").at(0).get<std::string>());
  } else if (type == "TemplateProcessing") {
    bool after = false;
    for (const auto& piece : pp.at("single")) {
      if (piece.contains("Sequence")) {
        after = true;
      } else if (piece.contains("SpecialToken")) {
        (after ? suffix : prefix).push_back(piece["SpecialToken"].at("id").get<std::string>());
      }
    }
  } else if (type == "Sequence") {
    for (const auto& p : pp.at("processors")) read_template(p, prefix, suffix, source);
  } else {
    CANDELA_CHECK_T(ParseError, type == "ByteLevel", source, ": post_processor '", type,
                    "' is not supported (RobertaProcessing, BertProcessing, TemplateProcessing, ByteLevel).");
  }
}

}  // namespace

BpeTokenizer::BpeTokenizer(const nlohmann::json& j, const std::string& pad_token) {
  const std::string source = "tokenizer.json";
  try {
    const auto& model = j.at("model");
    CANDELA_CHECK_T(ParseError, model.value("type", "BPE") == "BPE", "its model is '", model.value("type", ""),
                    "', not BPE (WordPiece vocabularies are read from vocab.txt: \"type\": \"wordpiece\").");
    auto add = [&](const std::string& token, int64_t id) {
      CANDELA_CHECK_T(ParseError, id >= 0 && id < (int64_t{1} << 24), "token '", token, "' has id ", id, ".");
      if (static_cast<int64_t>(vocab_.size()) <= id) vocab_.resize(static_cast<size_t>(id) + 1);
      vocab_[static_cast<size_t>(id)] = token;
      index_[token] = id;
    };
    for (const auto& [token, id] : model.at("vocab").items()) add(token, id.get<int64_t>());
    int64_t rank = 0;
    for (const auto& m : model.at("merges")) {
      const std::string pair = m.is_array() ? m.at(0).get<std::string>() + " " + m.at(1).get<std::string>()
                                            : m.get<std::string>();
      ranks_.emplace(pair, rank++);
    }
    if (j.contains("added_tokens"))
      for (const auto& t : j["added_tokens"]) {
        add(t.at("content").get<std::string>(), t.at("id").get<int64_t>());
        special_[t.at("content").get<std::string>()] = t.value("special", true);
      }
    const nlohmann::json& pre = j.value("pre_tokenizer", nlohmann::json());
    auto read_pre = [&](const nlohmann::json& p) {
      if (p.is_null()) return;
      CANDELA_CHECK_T(ParseError, p.value("type", "") == "ByteLevel", "its pre_tokenizer is '", p.value("type", ""),
                      "'; Candela reads byte-level BPE (GPT-2, RoBERTa: a ByteLevel pre-tokenizer).");
      add_prefix_space_ = p.value("add_prefix_space", false);
    };
    if (pre.value("type", "") == "Sequence") {
      for (const auto& p : pre.at("pretokenizers")) read_pre(p);
    } else {
      CANDELA_CHECK_T(ParseError, !pre.is_null(), "it has no pre_tokenizer; Candela reads byte-level BPE (a ByteLevel "
                      "pre-tokenizer).");
      read_pre(pre);
    }
    read_template(j.value("post_processor", nlohmann::json()), prefix_, suffix_, source);
    if (model.contains("unk_token") && model["unk_token"].is_string()) unk_ = id(model["unk_token"].get<std::string>());
  } catch (const ParseError&) {
    throw;
  } catch (const std::exception& e) {
    throw ParseError(str_cat("the tokenizer.json is malformed (", e.what(), "): expected HuggingFace's format with a "
                             "BPE model (vocab, merges) and a ByteLevel pre-tokenizer."));
  }
  for (const auto& s : prefix_) CANDELA_CHECK_T(ParseError, id(s) >= 0, "its post_processor names '", s, "', which is not a token.");
  for (const auto& s : suffix_) CANDELA_CHECK_T(ParseError, id(s) >= 0, "its post_processor names '", s, "', which is not a token.");
  if (!pad_token.empty()) {
    pad_ = id(pad_token);
    CANDELA_CHECK_T(ParseError, pad_ >= 0, "pad_token '", pad_token, "' is not one of its tokens.");
  } else {
    for (const char* p : {"<pad>", "[PAD]", "<|endoftext|>"})
      if (pad_ < 0) pad_ = id(p);
  }
}

BpeTokenizer BpeTokenizer::from_config(const TokenizerConfig& config) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(config.vocab, 256 << 20));
  } catch (const nlohmann::json::exception& e) {
    throw ParseError(str_cat("'", config.vocab, "' is not JSON (", e.what(), "): a BPE tokenizer is read from "
                             "HuggingFace's tokenizer.json."));
  }
  try {
    return BpeTokenizer(j, config.pad_token);
  } catch (const ParseError& e) {
    throw ParseError(str_cat("'", config.vocab, "': ", e.what()));
  }
}

std::vector<std::string> BpeTokenizer::pre_tokenize(const std::string& text) {
  std::vector<std::string> out;
  const size_t n = text.size();
  auto cls = [&](size_t i) { return byte_class(static_cast<unsigned char>(text[i])); };
  auto run = [&](size_t i, ByteClass c) {
    while (i < n && cls(i) == c) ++i;
    return i;
  };
  size_t i = 0;
  while (i < n) {
    // 's|'t|'re|'ve|'m|'ll|'d
    if (text[i] == '\'') {
      bool matched = false;
      for (const char* c : {"s", "t", "re", "ve", "m", "ll", "d"}) {
        const std::string suffix(c);
        if (text.compare(i + 1, suffix.size(), suffix) == 0) {
          out.push_back(text.substr(i, 1 + suffix.size()));
          i += 1 + suffix.size();
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    const ByteClass c = cls(i);
    if (c != ByteClass::kSpace || (text[i] == ' ' && i + 1 < n && cls(i + 1) != ByteClass::kSpace)) {
      // ` ?letters| ?digits| ?other`
      const size_t start = i;
      if (c == ByteClass::kSpace) ++i;
      const ByteClass k = cls(i);
      i = run(i, k);
      out.push_back(text.substr(start, i - start));
      continue;
    }
    // `\s+(?!\S)|\s+`: a run of whitespace leaves its last character to a following non-space.
    const size_t end = run(i, ByteClass::kSpace);
    if (end < n && end - i > 1) {
      out.push_back(text.substr(i, end - 1 - i));
      i = end - 1;
    } else if (end < n && text[i] != ' ') {
      out.push_back(text.substr(i, 1));
      i += 1;
    } else {
      out.push_back(text.substr(i, end - i));
      i = end;
    }
  }
  return out;
}

std::vector<std::string> BpeTokenizer::bpe(const std::string& piece) const {
  std::vector<std::string> parts;
  for (unsigned char b : piece) parts.push_back(byte_symbols()[b]);
  while (parts.size() > 1) {
    int64_t best = -1;
    size_t at = 0;
    for (size_t k = 0; k + 1 < parts.size(); ++k) {
      auto it = ranks_.find(parts[k] + " " + parts[k + 1]);
      if (it != ranks_.end() && (best < 0 || it->second < best)) best = it->second, at = k;
    }
    if (best < 0) break;
    // Merge every occurrence of the best pair, left to right (as GPT-2's bpe()).
    const std::string a = parts[at], b = parts[at + 1];
    std::vector<std::string> merged;
    for (size_t k = 0; k < parts.size(); ++k) {
      if (k + 1 < parts.size() && parts[k] == a && parts[k + 1] == b) {
        merged.push_back(a + b);
        ++k;
      } else {
        merged.push_back(parts[k]);
      }
    }
    parts = std::move(merged);
  }
  return parts;
}

Encoding BpeTokenizer::encode(const std::string& text, int64_t length) const {
  Encoding e;
  for (const auto& s : prefix_) {
    e.tokens.push_back(s);
    e.word_of_token.push_back(-1);
  }
  const std::string input = add_prefix_space_ && !text.empty() && text[0] != ' ' ? " " + text : text;
  for (const auto& piece : pre_tokenize(input)) {
    const int64_t w = static_cast<int64_t>(e.words.size());
    std::string word = piece;
    while (!word.empty() && byte_class(static_cast<unsigned char>(word[0])) == ByteClass::kSpace && word.size() > 1) word.erase(0, 1);
    e.words.push_back(word);
    for (auto& t : bpe(piece)) {
      CANDELA_CHECK(id(t) >= 0 || unk_ >= 0, "the BPE vocabulary has no token for '", text_of(t), "' in '",
                    text.size() > 60 ? text.substr(0, 57) + "..." : text, "' and no unk_token: the tokenizer.json does "
                    "not belong to this text's alphabet.");
      e.tokens.push_back(std::move(t));
      e.word_of_token.push_back(w);
    }
  }
  for (const auto& s : suffix_) {
    e.tokens.push_back(s);
    e.word_of_token.push_back(-1);
  }
  CANDELA_CHECK(length <= 0 || static_cast<int64_t>(e.tokens.size()) <= length, "the text '",
                text.size() > 60 ? text.substr(0, 57) + "..." : text, "' is ", e.tokens.size(),
                " tokens long with its special tokens, but the model takes ", length,
                ". Shorten it (Candela does not truncate silently).");
  CANDELA_CHECK(length <= 0 || static_cast<int64_t>(e.tokens.size()) == length || pad_ >= 0, "the text needs ",
                length - static_cast<int64_t>(e.tokens.size()), " padding tokens, but the tokenizer.json has no <pad>, "
                "[PAD] or <|endoftext|>: name one with \"pad_token\" in the sidecar's tokenizer entry.");
  while (length > 0 && static_cast<int64_t>(e.tokens.size()) < length) {
    e.tokens.push_back(vocab_[static_cast<size_t>(pad_)]);
    e.word_of_token.push_back(-1);
  }
  for (const auto& t : e.tokens) e.ids.push_back(id(t) >= 0 ? id(t) : unk_);
  return e;
}

std::string BpeTokenizer::text_of(const std::string& token) const {
  if (special_.count(token)) return token;
  std::string out;
  for (const auto& ch : utf8_chars(token)) {
    auto it = symbol_bytes().find(ch);
    out += it == symbol_bytes().end() ? ch : std::string(1, static_cast<char>(it->second));
  }
  return out;
}

Encoding BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  // Words as encode() makes them: each run of ordinary tokens is joined back into bytes and split
  // by the pre-tokenizer; a token belongs to the piece its first byte falls in.
  Encoding e;
  e.ids = ids;
  std::vector<std::string> bytes;
  for (int64_t i : ids) {
    e.tokens.push_back(token(i));
    auto sp = special_.find(e.tokens.back());
    bytes.push_back(sp != special_.end() && sp->second ? std::string() : text_of(e.tokens.back()));
  }
  e.word_of_token.assign(ids.size(), -1);
  for (size_t k = 0; k < ids.size();) {
    auto sp = special_.find(e.tokens[k]);
    if (sp != special_.end() && sp->second) {
      ++k;
      continue;
    }
    size_t end = k;
    std::string run;
    std::vector<size_t> offset;
    for (; end < ids.size(); ++end) {
      auto s2 = special_.find(e.tokens[end]);
      if (s2 != special_.end() && s2->second) break;
      offset.push_back(run.size());
      run += bytes[end];
    }
    size_t at = 0, piece_start = 0;
    const auto pieces = pre_tokenize(run);
    for (size_t p = 0; p < pieces.size(); ++p) {
      std::string word = pieces[p];
      while (word.size() > 1 && byte_class(static_cast<unsigned char>(word[0])) == ByteClass::kSpace) word.erase(0, 1);
      e.words.push_back(word);
      const size_t piece_end = piece_start + pieces[p].size();
      for (; at < offset.size() && (offset[at] < piece_end || p + 1 == pieces.size()); ++at)
        e.word_of_token[k + at] = static_cast<int64_t>(e.words.size()) - 1;
      piece_start = piece_end;
    }
    for (; at < offset.size(); ++at) e.word_of_token[k + at] = static_cast<int64_t>(e.words.size()) - 1;
    k = end;
  }
  return e;
}

int64_t BpeTokenizer::id(const std::string& token) const {
  auto it = index_.find(token);
  return it == index_.end() ? -1 : it->second;
}

const std::string& BpeTokenizer::token(int64_t id) const {
  CANDELA_CHECK(id >= 0 && id < size(), "token id ", id, " is outside the vocabulary (", size(),
                " tokens); the ids do not belong to this model's tokenizer.json.");
  return vocab_[static_cast<size_t>(id)];
}

// ---- SentencePiece -------------------------------------------------------------------------

SentencePieceTokenizer SentencePieceTokenizer::from_config(const TokenizerConfig& config) {
#ifndef CANDELA_HAVE_SENTENCEPIECE
  throw UnsupportedModel(str_cat("the model's tokenizer is the SentencePiece model '", config.vocab, "', but this "
                                 "Candela was built without SentencePiece. Install Debian's libsentencepiece-dev "
                                 "(scripts/install-deps.sh does) and rebuild (cmake finds it), or give token ids as "
                                 "a .npy [N, L]."));
#else
  return SentencePieceTokenizer(read_file(config.vocab, 256 << 20), config.vocab, config.add_bos, config.add_eos,
                                config.pad_token, config.bos_token, config.eos_token);
#endif
}

#ifdef CANDELA_HAVE_SENTENCEPIECE

namespace {

const std::string kMeta = "\xe2\x96\x81";  // U+2581, SentencePiece's space

bool starts_with_meta(const std::string& piece) { return piece.compare(0, kMeta.size(), kMeta) == 0; }

std::string trim_spaces(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

// The shim's loader, dlopened once (RTLD_DEEPBIND: see detail/sentencepiece_api.h); null and the
// reason when it cannot be loaded. CANDELA_SENTENCEPIECE_SHIM in the environment overrides the
// path compiled in (a build tree moved elsewhere).
detail::SpmLoadFn spm_loader(std::string* why = nullptr) {
  static std::string reason;
  static const detail::SpmLoadFn fn = [] () -> detail::SpmLoadFn {
    const char* env = std::getenv("CANDELA_SENTENCEPIECE_SHIM");
    const std::string path = env && *env ? env : CANDELA_SENTENCEPIECE_SHIM;
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) {
      const char* e = dlerror();
      reason = str_cat("Candela's SentencePiece shim '", path, "' cannot be loaded (", e ? e : "unknown error",
                       "): build the target candela_sentencepiece, or point CANDELA_SENTENCEPIECE_SHIM at it.");
      return nullptr;
    }
    auto f = reinterpret_cast<detail::SpmLoadFn>(dlsym(handle, detail::kSpmLoadSymbol));
    if (!f) reason = str_cat("'", path, "' is not Candela's SentencePiece shim (no ", detail::kSpmLoadSymbol, ").");
    return f;
  }();
  if (why) *why = reason;
  return fn;
}

}  // namespace

bool SentencePieceTokenizer::available() { return spm_loader() != nullptr; }

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model, const std::string& source, bool add_bos,
                                               bool add_eos, const std::string& pad_token, const std::string& bos_token,
                                               const std::string& eos_token)
    : source_(source) {
  std::string why;
  const detail::SpmLoadFn load = spm_loader(&why);
  CANDELA_CHECK_T(UnsupportedModel, load != nullptr, "'", source, "': ", why);
  std::string error;
  detail::SpmModel* sp = load(model.data(), model.size(), &error);
  CANDELA_CHECK_T(ParseError, sp != nullptr, "'", source, "' is not a SentencePiece model (", error,
                  "): the \"sentencepiece\" tokenizer reads the .model file that SentencePieceTrainer writes "
                  "(e.g. spiece.model, tokenizer.model).");
  sp_.reset(sp);
  auto piece = [&](const std::string& token, int model_id, const char* field) -> int64_t {
    if (token.empty()) return model_id;
    const int64_t i = id(token);
    CANDELA_CHECK_T(ParseError, i >= 0, "'", source, "': ", field, " '", token, "' is not one of its pieces.");
    return i;
  };
  bos_ = add_bos ? piece(bos_token, sp_->bos_id(), "bos_token") : -1;
  eos_ = add_eos ? piece(eos_token, sp_->eos_id(), "eos_token") : -1;
  pad_ = piece(pad_token, sp_->pad_id(), "pad_token");
}

Encoding SentencePieceTokenizer::encode(const std::string& text, int64_t length) const {
  std::vector<detail::SpmPiece> pieces;
  std::string error;
  CANDELA_CHECK(sp_->encode(text, pieces, error), "SentencePiece could not encode '",
                text.size() > 60 ? text.substr(0, 57) + "..." : text, "': ", error);
  Encoding e;
  auto special = [&](int id) {
    e.ids.push_back(id);
    e.tokens.push_back(sp_->id_to_piece(id));
    e.word_of_token.push_back(-1);
  };
  if (bos_ >= 0) special(static_cast<int>(bos_));
  for (auto& p : pieces) {
    if (e.words.empty() || starts_with_meta(p.piece)) e.words.emplace_back();
    e.words.back() += p.surface;
    e.ids.push_back(p.id);
    e.tokens.push_back(std::move(p.piece));
    e.word_of_token.push_back(static_cast<int64_t>(e.words.size()) - 1);
  }
  for (auto& w : e.words) w = trim_spaces(w);
  if (eos_ >= 0) special(static_cast<int>(eos_));
  const auto n = static_cast<int64_t>(e.ids.size());
  CANDELA_CHECK(length <= 0 || n <= length, "the text '", text.size() > 60 ? text.substr(0, 57) + "..." : text,
                "' is ", n, " tokens long with its special tokens, but the model takes ", length,
                ". Shorten it (Candela does not truncate silently).");
  CANDELA_CHECK(length <= 0 || n == length || pad_ >= 0, "the text needs ", length - n, " padding tokens, but the "
                "SentencePiece model '", source_, "' has no pad piece (pad_id -1): name one with \"pad_token\" in "
                "the sidecar's tokenizer entry (e.g. \"</s>\", as Llama users do).");
  while (length > 0 && static_cast<int64_t>(e.ids.size()) < length) special(static_cast<int>(pad_));
  return e;
}

Encoding SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  Encoding e;
  e.ids = ids;
  std::vector<std::vector<int>> word_ids;
  for (int64_t i : ids) {
    e.tokens.push_back(token(i));
    if (sp_->is_control(static_cast<int>(i)) || i == pad_ || i == bos_ || i == eos_) {
      e.word_of_token.push_back(-1);
      continue;
    }
    if (word_ids.empty() || starts_with_meta(e.tokens.back())) word_ids.emplace_back();
    word_ids.back().push_back(static_cast<int>(i));
    e.word_of_token.push_back(static_cast<int64_t>(word_ids.size()) - 1);
  }
  // The processor decodes each word (byte pieces join into characters, unknown pieces read as "⁇").
  for (const auto& w : word_ids) e.words.push_back(trim_spaces(sp_->decode(w)));
  return e;
}

int64_t SentencePieceTokenizer::id(const std::string& token) const {
  const int i = sp_->piece_to_id(token);  // the unknown id for a piece it lacks
  return i == sp_->unk_id() && token != sp_->id_to_piece(i) ? -1 : i;
}

const std::string& SentencePieceTokenizer::token(int64_t id) const {
  CANDELA_CHECK(id >= 0 && id < size(), "token id ", id, " is outside the vocabulary (", size(),
                " pieces); the ids do not belong to the SentencePiece model '", source_, "'.");
  return sp_->id_to_piece(static_cast<int>(id));
}

int64_t SentencePieceTokenizer::size() const { return sp_->size(); }

#else  // built without libsentencepiece: from_config refuses, so no object exists

bool SentencePieceTokenizer::available() { return false; }

SentencePieceTokenizer::SentencePieceTokenizer(const std::string&, const std::string& source, bool, bool,
                                               const std::string&, const std::string&, const std::string&) {
  throw UnsupportedModel(str_cat("'", source, "' is a SentencePiece model, but this Candela was built without "
                                 "SentencePiece. Install Debian's libsentencepiece-dev and rebuild."));
}
Encoding SentencePieceTokenizer::encode(const std::string&, int64_t) const { return {}; }
Encoding SentencePieceTokenizer::decode(const std::vector<int64_t>&) const { return {}; }
int64_t SentencePieceTokenizer::id(const std::string&) const { return -1; }
const std::string& SentencePieceTokenizer::token(int64_t) const {
  static const std::string none;
  return none;
}
int64_t SentencePieceTokenizer::size() const { return 0; }

#endif

}  // namespace candela
