#include "candela/text/tokenizer.h"

#include <cctype>
#include <filesystem>

#include "candela/core/error.h"
#include "candela/detail/text.h"
#include "candela/io/file.h"

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
  try {
    CANDELA_CHECK_T(ParseError, j.is_object(), "must be an object");
    if (j.contains("type")) c.type = j.at("type").get<std::string>();
    c.vocab = j.at("vocab").get<std::string>();
    if (j.contains("lowercase")) c.lowercase = j.at("lowercase").get<bool>();
    if (j.contains("max_length")) c.max_length = j.at("max_length").get<int64_t>();
  } catch (const std::exception& e) {
    throw ParseError(str_cat(source, ": the \"tokenizer\" entry is malformed (", e.what(),
                             "). Expected {\"type\": \"wordpiece\", \"vocab\": \"vocab.txt\", \"lowercase\": true, "
                             "\"max_length\": 128}."));
  }
  CANDELA_CHECK_T(ParseError, c.type == "wordpiece", source, ": tokenizer type '", c.type,
                  "' is not supported; Candela reads WordPiece vocabularies (\"type\": \"wordpiece\"). For other "
                  "tokenizers, give token ids as a .npy [N, L] instead.");
  CANDELA_CHECK_T(ParseError, c.max_length >= 0, source, ": tokenizer max_length must be >= 0, got ", c.max_length, ".");
  std::filesystem::path p(c.vocab);
  if (p.is_relative() && !base_dir.empty()) c.vocab = (std::filesystem::path(base_dir) / p).string();
  return c;
}

nlohmann::json TokenizerConfig::to_json() const {
  return {{"type", type}, {"vocab", vocab}, {"lowercase", lowercase}, {"max_length", max_length}};
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

}  // namespace candela
