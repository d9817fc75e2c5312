#include "candela/text/tokens.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <sstream>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/detail/text.h"
#include "candela/io/file.h"

namespace candela {
using detail::shape_str;
using detail::str_cat;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::unique_ptr<Tokenizer> model_tokenizer(const Model& model) {
  if (model.tokenizer().is_null()) return nullptr;
  return Tokenizer::from_config(TokenizerConfig::from_json(model.tokenizer(), "", "the model's sidecar"));
}

// Ids shown as "#id" when the model names no vocabulary.
Encoding bare_encoding(const std::vector<int64_t>& ids) {
  Encoding e;
  e.ids = ids;
  for (size_t i = 0; i < ids.size(); ++i) {
    e.tokens.push_back("#" + std::to_string(ids[i]));
    e.words.push_back(e.tokens.back());
    e.word_of_token.push_back(static_cast<int64_t>(i));
  }
  return e;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// The diverging scale: t in [-1, 1] -> blue (-1), white (0), red (+1).
void diverging(double t, int& r, int& g, int& b) {
  t = std::clamp(std::isfinite(t) ? t : 0.0, -1.0, 1.0);
  const int fade = static_cast<int>(std::lround(255.0 * (1.0 - std::abs(t))));
  r = t < 0 ? fade : 255;
  g = fade;
  b = t > 0 ? fade : 255;
}

// The items one line shows: words (aggregate == "word") or tokens without [PAD].
std::vector<std::pair<std::string, double>> line_items(const nlohmann::json& sample) {
  std::vector<std::pair<std::string, double>> items;
  if (sample.contains("words")) {
    for (const auto& w : sample["words"]) items.emplace_back(w["word"].get<std::string>(), w["value"].get<double>());
  } else {
    for (const auto& t : sample["tokens"])
      if (t["token"] != "[PAD]" && t["token"] != "<pad>") items.emplace_back(t["token"].get<std::string>(), t["value"].get<double>());
  }
  return items;
}

double scale_of(const std::vector<std::pair<std::string, double>>& items) {
  double s = 0;
  for (const auto& [_, v] : items)
    if (std::isfinite(v)) s = std::max(s, std::abs(v));
  return s > 0 ? s : 1.0;
}

}  // namespace

void validate_token_options(const std::string& reduction, const std::string& aggregate,
                            const std::string& word_reduction) {
  CANDELA_CHECK(reduction == "sum" || reduction == "l2", "--token-reduction must be sum (signed sum over the embedding, "
                "Captum's choice) or l2 (the L2 norm, inseq's), got '", reduction, "'.");
  CANDELA_CHECK(aggregate == "token" || aggregate == "word", "--aggregate must be token or word, got '", aggregate, "'.");
  CANDELA_CHECK(word_reduction == "sum" || word_reduction == "mean" || word_reduction == "max",
                "--word-reduction must be sum, mean or max, got '", word_reduction, "'.");
}

at::Tensor padding_mask(const Model& model, const at::Tensor& ids) {
  auto tok = model_tokenizer(model);
  if (!tok || tok->pad_id() < 0) return at::Tensor();
  return (ids.detach().round().to(at::kLong) != tok->pad_id()).to(at::kLong);
}

LoadedInput load_token_input(const std::string& input, const Model& model) {
  const InputSpec& spec = model.input_spec();
  CANDELA_CHECK(!input.empty(), "no input given: pass token ids (.npy [N, L]), a .txt file with one text per line, or "
                "the text itself.");
  auto tok = model_tokenizer(model);
  LoadedInput in;
  if (ends_with(input, ".npy")) {
    in = load_input(input, spec);
    at::Tensor ids = in.batch;
    CANDELA_CHECK_T(ShapeMismatch, ids.dim() == 2, "token ids must be [N, L], got ", shape_str(ids.sizes()), " in '",
                    input, "'.");
    CANDELA_CHECK(at::equal(ids, ids.round()) && (ids >= 0).all().item<bool>(), "'", input,
                  "' holds values that are not token ids (non-negative integers).");
    at::Tensor ids64 = ids.to(at::kLong).contiguous();
    for (int64_t i = 0; i < ids64.size(0); ++i) {
      std::vector<int64_t> row(ids64[i].data_ptr<int64_t>(), ids64[i].data_ptr<int64_t>() + ids64.size(1));
      in.tokens.push_back(tok ? tok->decode(row) : bare_encoding(row));
    }
    return in;
  }
  std::vector<std::string> texts;
  if (ends_with(input, ".txt")) {
    for (auto& line : detail::split(read_file(input, 64 << 20), '\n')) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) texts.push_back(std::move(line));
    }
    CANDELA_CHECK(!texts.empty(), "'", input, "' holds no text; write one text per line.");
  } else {
    std::error_code ec;
    CANDELA_CHECK(!std::filesystem::is_regular_file(input, ec), "cannot read input '", input,
                  "' for a token model: use token ids (.npy [N, L]), a .txt file with one text per line, or the "
                  "text itself.");
    texts.push_back(input);
  }
  CANDELA_CHECK(tok != nullptr, "the model's sidecar names no tokenizer, so text cannot be turned into token ids. Add "
                "\"tokenizer\": {\"type\": \"wordpiece\", \"vocab\": \"vocab.txt\"} (or bpe, sentencepiece) to the model's .json, or give "
                "token ids as a .npy [N, L].");
  int64_t length = model.tokenizer().value("max_length", int64_t{0});
  if (length <= 0 && spec.shape.size() == 1) length = spec.shape[0];
  if (length <= 0) {  // no fixed length: pad every text to the longest
    for (const auto& t : texts) length = std::max<int64_t>(length, static_cast<int64_t>(tok->encode(t, 0).ids.size()));
  }
  std::vector<int64_t> flat;
  for (const auto& t : texts) {
    in.tokens.push_back(tok->encode(t, length));
    flat.insert(flat.end(), in.tokens.back().ids.begin(), in.tokens.back().ids.end());
  }
  in.batch = at::tensor(flat, at::kLong).view({static_cast<int64_t>(texts.size()), length}).to(at::kFloat);
  return in;
}

std::vector<std::string> model_vocabulary(const Model& model) {
  std::vector<std::string> vocab;
  if (auto tok = model_tokenizer(model))
    for (int64_t i = 0; i < tok->size(); ++i) vocab.push_back(tok->token(i));
  return vocab;
}

namespace {

std::string id_list(const at::Tensor& ids) {
  const at::Tensor v = ids.to(at::kLong).cpu().contiguous();
  std::string s;
  for (int64_t i = 0; i < v.numel(); ++i) s += (i ? "," : "") + std::to_string(v.data_ptr<int64_t>()[i]);
  return s;
}

}  // namespace

std::string fill_target_tokens(const std::string& target, const at::Tensor& ids) {
  const bool logprob = target.rfind("logprob:", 0) == 0, contrast = target.rfind("contrast:", 0) == 0;
  if (!logprob && !contrast) return target;
  auto parts = detail::split(target, ':');
  if (parts.size() < 2 || (logprob && parts.size() > 2) || (contrast && (parts.size() != 4 || !parts[2].empty())))
    return target;  // a token is given (or the form is wrong: Target::parse says how)
  CANDELA_CHECK_T(ShapeMismatch, ids.dim() == 2, "target '", target, "' takes its token from the input, which must be "
                  "token ids [N, L]; got ", shape_str(ids.sizes()), ".");
  long long pos = 0;
  CANDELA_CHECK(detail::parse_int64(parts[1], pos), "target '", target, "': the position '", parts[1],
                "' must be one integer when the token is taken from the input.");
  const int64_t length = ids.size(1);
  CANDELA_CHECK(pos >= 1 && pos < length, "target '", target, "': position ", pos, " is out of range: teacher forcing "
                "explains the token at POS from the logits of position POS - 1, so POS must be in 1..", length - 1,
                " for inputs of ", length, " tokens.");
  const std::string tokens = id_list(ids.select(1, pos));
  return logprob ? str_cat(target, ":", tokens) : str_cat(parts[0], ":", parts[1], ":", tokens, ":", parts[3]);
}

PerStepRequest per_step_request(const at::Tensor& ids) {
  CANDELA_CHECK_T(ShapeMismatch, ids.dim() == 2 && ids.size(1) >= 2, "--per-step needs token ids [N, L] with L >= 2, "
                  "got ", shape_str(ids.sizes()), ".");
  const int64_t n = ids.size(0), steps = ids.size(1) - 1;
  PerStepRequest r;
  r.steps = steps;
  r.inputs = ids.repeat_interleave(steps, 0);
  const at::Tensor pos = at::arange(1, steps + 1, at::kLong).repeat({n});
  const at::Tensor tokens = ids.to(at::kLong).cpu().slice(1, 1).reshape({-1});
  r.target = str_cat("logprob:", id_list(pos), ":", id_list(tokens));
  return r;
}

at::Tensor reduce_embedding(const at::Tensor& values, const std::string& reduction) {
  CANDELA_CHECK_T(ShapeMismatch, values.dim() >= 2, "token attributions must be [N, L] or [N, L, D], got ",
                  shape_str(values.sizes()), ".");
  if (values.dim() == 2) return values;
  at::Tensor flat = values.flatten(2);
  if (reduction == "sum") return flat.sum(2);
  CANDELA_CHECK(reduction == "l2", "token reduction must be sum or l2, got '", reduction, "'.");
  return flat.pow(2).sum(2).sqrt();
}

nlohmann::json token_json(const at::Tensor& values, const std::vector<Encoding>& tokens, const std::string& aggregate,
                          const std::string& word_reduction) {
  validate_token_options("sum", aggregate, word_reduction);
  CANDELA_CHECK_T(ShapeMismatch, values.dim() == 2 && values.size(0) == static_cast<int64_t>(tokens.size()),
                  "token values must be [N, L] with one row per text, got ", shape_str(values.sizes()), " for ",
                  tokens.size(), " texts.");
  const at::Tensor v = values.detach().to(at::kCPU, at::kDouble).contiguous();
  auto acc = v.accessor<double, 2>();
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const Encoding& e = tokens[i];
    CANDELA_CHECK_T(ShapeMismatch, static_cast<int64_t>(e.ids.size()) == v.size(1), "text ", i, " has ", e.ids.size(),
                    " tokens but its attribution has ", v.size(1), ".");
    nlohmann::json sample;
    sample["tokens"] = nlohmann::json::array();
    for (size_t j = 0; j < e.ids.size(); ++j)
      sample["tokens"].push_back({{"index", j}, {"token", e.tokens[j]}, {"id", e.ids[j]}, {"value", acc[i][j]},
                                  {"word", e.word_of_token[j]}});
    if (aggregate == "word") {
      sample["word_reduction"] = word_reduction;
      sample["words"] = nlohmann::json::array();
      for (size_t w = 0; w < e.words.size(); ++w) {
        std::vector<int64_t> pieces;
        double total = 0, best = -INFINITY;
        for (size_t j = 0; j < e.ids.size(); ++j)
          if (e.word_of_token[j] == static_cast<int64_t>(w)) {
            pieces.push_back(static_cast<int64_t>(j));
            total += acc[i][j];
            best = std::max(best, acc[i][j]);
          }
        if (pieces.empty()) continue;
        const double value = word_reduction == "sum"    ? total
                             : word_reduction == "mean" ? total / static_cast<double>(pieces.size())
                                                        : best;
        sample["words"].push_back({{"word", e.words[w]}, {"value", value}, {"tokens", pieces}});
      }
    }
    out.push_back(std::move(sample));
  }
  return out;
}

std::string render_tokens_html(const nlohmann::json& samples, const std::string& title) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" << html_escape(title)
    << "</title>\n<style>body{font-family:sans-serif;margin:2em} .t{padding:2px 4px;margin:1px;border-radius:3px;"
       "display:inline-block;font-family:monospace} .s{margin:0.6em 0} .legend span{padding:2px 8px}</style></head>"
       "<body>\n<h1>" << html_escape(title) << "</h1>\n<p class=\"legend\">";
  for (double t : {-1.0, -0.5, 0.0, 0.5, 1.0}) {
    int r, g, b;
    diverging(t, r, g, b);
    h << "<span style=\"background:rgb(" << r << ',' << g << ',' << b << ")\">" << (t > 0 ? "+" : "") << t << "</span>";
  }
  h << " &nbsp;(each line scaled by its largest |value|)</p>\n";
  for (size_t i = 0; i < samples.size(); ++i) {
    auto items = line_items(samples[i]);
    const double scale = scale_of(items);
    h << "<div class=\"s\">" << i << ": ";
    for (const auto& [text, v] : items) {
      int r, g, b;
      diverging(v / scale, r, g, b);
      h << "<span class=\"t\" title=\"" << v << "\" style=\"background:rgb(" << r << ',' << g << ',' << b << ")\">"
        << html_escape(text) << "</span>";
    }
    h << "</div>\n";
  }
  h << "</body></html>\n";
  return h.str();
}

std::string render_tokens_ansi(const nlohmann::json& samples) {
  std::ostringstream s;
  for (size_t i = 0; i < samples.size(); ++i) {
    auto items = line_items(samples[i]);
    const double scale = scale_of(items);
    s << i << ": ";
    for (const auto& [text, v] : items) {
      int r, g, b;
      diverging(v / scale, r, g, b);
      s << "\x1b[48;2;" << r << ';' << g << ';' << b << "m\x1b[38;2;0;0;0m" << text << "\x1b[0m ";
    }
    s << '\n';
  }
  return s.str();
}

}  // namespace candela
