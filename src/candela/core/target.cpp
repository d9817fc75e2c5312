// Target: what an explanation explains (core/target.h).
#include "candela/core/target.h"


#include <ATen/ATen.h>

#include <algorithm>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"
#include "candela/detail/text.h"
#include "candela/io/npy.h"

namespace candela {
using detail::shape_str;
using detail::str_cat;

Target Target::top1() { return Target(); }
Target Target::index(int64_t class_index) {
  CANDELA_CHECK(class_index >= 0, "target class must be non-negative, got ", class_index, ".");
  Target t;
  t.kind_ = Kind::kIndex;
  t.indices_ = {class_index};
  return t;
}
Target Target::indices(std::vector<int64_t> per_sample) {
  CANDELA_CHECK(!per_sample.empty(), "per-sample targets need at least one index.");
  for (auto c : per_sample) CANDELA_CHECK(c >= 0, "target class must be non-negative, got ", c, ".");
  Target t;
  t.kind_ = Kind::kIndices;
  t.indices_ = std::move(per_sample);
  return t;
}
Target Target::function(ScoreFunction fn, std::string description) {
  CANDELA_CHECK(static_cast<bool>(fn), "Target::function needs a callable.");
  Target t;
  t.kind_ = Kind::kFunction;
  t.fn_ = std::move(fn);
  t.description_ = std::move(description);
  return t;
}

Target Target::region(int64_t cls, at::Tensor mask) {
  CANDELA_CHECK(cls >= 0, "region target class must be non-negative, got ", cls, ".");
  CANDELA_CHECK(mask.defined() && (mask.dim() == 2 || mask.dim() == 3), "a region mask must be [H, W] or [N, H, W].");
  mask = mask.to(at::kFloat);
  auto fn = [cls, mask](const at::Tensor& out) {
    CANDELA_CHECK(out.dim() == 4, "a region target needs a segmentation output [N, C, H, W], got ",
                  shape_str(out.sizes()), ".");
    CANDELA_CHECK(cls < out.size(1), "region target class ", cls, " is out of range: the output has ", out.size(1),
                  " classes.");
    CANDELA_CHECK_T(ShapeMismatch, mask.sizes().slice(mask.dim() - 2) == out.sizes().slice(2),
                    "the region mask is ", shape_str(mask.sizes()), " but the output's maps are ",
                    shape_str(out.sizes().slice(2)), ".");
    return (out.select(1, cls) * mask.to(out.device(), out.scalar_type())).sum({1, 2});
  };
  Target t = function(fn, str_cat("region of class ", cls));
  return t;
}

Target Target::box(int64_t cls, int64_t y0, int64_t x0, int64_t y1, int64_t x1) {
  CANDELA_CHECK(y0 >= 0 && x0 >= 0 && y1 > y0 && x1 > x0, "a box is y0,x0,y1,x1 with y1 > y0 >= 0 and x1 > x0 >= 0.");
  CANDELA_CHECK(cls >= 0, "box target class must be non-negative, got ", cls, ".");
  auto fn = [=](const at::Tensor& out) {
    CANDELA_CHECK(out.dim() == 4, "a box target needs a segmentation output [N, C, H, W], got ", shape_str(out.sizes()),
                  ".");
    CANDELA_CHECK(cls < out.size(1), "box target class ", cls, " is out of range: the output has ", out.size(1),
                  " classes.");
    CANDELA_CHECK(y1 <= out.size(2) && x1 <= out.size(3), "the box ends at (", y1, ", ", x1, ") beyond the output's ",
                  out.size(2), "x", out.size(3), " maps.");
    return out.select(1, cls).slice(1, y0, y1).slice(2, x0, x1).sum({1, 2});
  };
  return function(fn, str_cat("box ", y0, ",", x0, ",", y1, ",", x1, " of class ", cls));
}

Target Target::element(std::vector<int64_t> index) {
  CANDELA_CHECK(!index.empty(), "an element target needs an index into the per-sample output.");
  auto fn = [index](const at::Tensor& out) {
    CANDELA_CHECK(static_cast<int64_t>(index.size()) == out.dim() - 1, "element target ",
                  shape_str(index), " has ", index.size(), " indices but each sample's output is ",
                  shape_str(out.sizes().slice(1)), ".");
    at::Tensor v = out;
    for (size_t d = 0; d < index.size(); ++d) {
      CANDELA_CHECK(index[d] >= 0 && index[d] < out.size(d + 1), "element target ", shape_str(index),
                    " is outside the per-sample output ", shape_str(out.sizes().slice(1)), ".");
      v = v.select(1, index[d]);
    }
    return v;
  };
  return function(fn, "element " + shape_str(index));
}

// ---- language-model targets ------------------------------------------------------------------
// logprob:POS:TOKEN and contrast:POS:TOKEN:FOIL (Target::parse) are function targets without a
// callable: indices_ holds one (position, token, foil) triple per sample (a single triple serves
// every sample), foil -1 for logprob, and scores() reads them (token_scores) so that each row uses
// its own sample's triple, as per-sample class targets do.
namespace {

constexpr size_t kTokenTriple = 3;

// log p(token_t | tokens < t) with teacher forcing: log_softmax of the logits at row t - 1 of an
// output [N, L, V]; minus the foil's when there is one. Computed in float64.
at::Tensor token_scores(const std::vector<int64_t>& triples, const at::Tensor& output, const at::Tensor& sample_of_row,
                        const std::string& what) {
  CANDELA_CHECK(output.dim() == 3, "target '", what, "' needs a language model's output [N, L, V] (next-token logits "
                "at every position), got ", shape_str(output.sizes()), ".");
  const int64_t rows = output.size(0), length = output.size(1), vocab = output.size(2);
  const int64_t samples = static_cast<int64_t>(triples.size() / kTokenTriple);
  for (int64_t s = 0; s < samples; ++s) {
    const int64_t pos = triples[s * kTokenTriple], token = triples[s * kTokenTriple + 1],
                  foil = triples[s * kTokenTriple + 2];
    CANDELA_CHECK(pos >= 1 && pos < length, "target '", what, "': position ", pos, " is out of range: teacher forcing "
                  "reads the logits of position POS - 1, so POS must be in 1..", length - 1, " for sequences of ",
                  length, " tokens.");
    for (int64_t t : {token, foil})
      CANDELA_CHECK(t < vocab, "target '", what, "': token id ", t, " is out of range: the model's output has ",
                    vocab, " vocabulary entries (0..", vocab - 1, ").");
  }
  at::Tensor table = at::tensor(triples, at::kLong).view({samples, static_cast<int64_t>(kTokenTriple)});
  if (samples == 1) {
    table = table.expand({rows, static_cast<int64_t>(kTokenTriple)});
  } else {
    CANDELA_CHECK(rows == 0 || sample_of_row.max().item<int64_t>() < samples, "target '", what, "' gives ", samples,
                  " per-sample positions or tokens, but there are more samples; give one per sample or a single one.");
    table = table.index_select(0, sample_of_row.to(at::kLong).cpu());
  }
  table = table.to(output.device());
  const at::Tensor pos = table.select(1, 0), token = table.select(1, 1), foil = table.select(1, 2);
  const at::Tensor logits = output.gather(1, (pos - 1).view({rows, 1, 1}).expand({rows, 1, vocab})).squeeze(1);
  const at::Tensor lp = at::log_softmax(logits.to(at::kDouble), 1);
  at::Tensor score = lp.gather(1, token.view({rows, 1})).squeeze(1);
  if (triples[2] >= 0) score = score - lp.gather(1, foil.view({rows, 1})).squeeze(1);
  return score.to(output.scalar_type());
}

}  // namespace

Target Target::parse(const std::string& text, const std::vector<std::string>& class_names) {
  if (text.empty() || text == "top1") return top1();
  if (text.rfind("logprob:", 0) == 0 || text.rfind("contrast:", 0) == 0) {
    // logprob:POS:TOKEN / contrast:POS:TOKEN:FOIL; each part one value or one per sample (a,b,c);
    // tokens by id or by vocabulary string (`class_names` is the vocabulary of a language model).
    const bool contrast = text[0] == 'c';
    const char* form = contrast ? "contrast:POS:TOKEN:FOIL" : "logprob:POS:TOKEN";
    const auto parts = detail::split(text, ':');
    const size_t want = contrast ? 4 : 3;
    CANDELA_CHECK(parts.size() == want || (!contrast && parts.size() == 2), "write the target as ", form, ", got '",
                  text, "'.");
    CANDELA_CHECK(parts.size() == want && !parts[2].empty(), "target '", text, "' names no token: give ", form,
                  " (`candela explain` fills in the input's own token at POS, teacher forcing, when TOKEN is left "
                  "out).");
    auto values = [&](const std::string& list, bool token) {
      std::vector<int64_t> out;
      for (const auto& item : detail::split(list, ',')) {
        long long v = 0;
        if (detail::parse_int64(item, v)) {
          CANDELA_CHECK(v >= 0, "target '", text, "': ", token ? "token id" : "position", " ", item,
                        " must be non-negative.");
          out.push_back(v);
          continue;
        }
        CANDELA_CHECK(token, "target '", text, "': position '", item, "' is not an integer.");
        auto it = std::find(class_names.begin(), class_names.end(), item);
        CANDELA_CHECK(it != class_names.end(), "target '", text, "': unknown token '", item, "'",
                      class_names.empty() ? "; this model names no vocabulary (its sidecar has no tokenizer): give "
                                            "token ids."
                                          : str_cat(": it is not in the model's vocabulary.",
                                                    did_you_mean(item, class_names)));
        out.push_back(it - class_names.begin());
      }
      return out;
    };
    std::vector<std::vector<int64_t>> cols{values(parts[1], false), values(parts[2], true)};
    if (contrast) cols.push_back(values(parts[3], true));
    size_t samples = 1;
    for (const auto& c : cols) samples = std::max(samples, c.size());
    for (const auto& c : cols)
      CANDELA_CHECK(c.size() == 1 || c.size() == samples, "target '", text, "': give each of POS, TOKEN",
                    contrast ? ", FOIL" : "", " once or once per sample (", samples, " here).");
    Target t;
    t.kind_ = Kind::kFunction;
    for (size_t s = 0; s < samples; ++s) {
      for (size_t k = 0; k < kTokenTriple; ++k)
        t.indices_.push_back(k < cols.size() ? cols[k][cols[k].size() == 1 ? 0 : s] : -1);
      CANDELA_CHECK(!contrast || t.indices_[s * kTokenTriple + 1] != t.indices_[s * kTokenTriple + 2], "target '",
                    text, "': the token and the foil are the same (sample ", s, "); a contrast needs two tokens.");
    }
    t.description_ = text;
    return t;
  }
  auto ints = [&](const std::string& list) {
    std::vector<int64_t> out;
    for (const auto& item : detail::split(list, ',')) {
      long long v = 0;
      CANDELA_CHECK(detail::parse_int64(item, v), "target '", text, "': '", item,
                    "' is not an integer (or is out of range).");
      out.push_back(v);
    }
    return out;
  };
  if (text.rfind("element:", 0) == 0) return element(ints(text.substr(8)));
  if (text.rfind("region:", 0) == 0) {
    std::string rest = text.substr(7);
    auto colon = rest.find(':');
    CANDELA_CHECK(colon != std::string::npos, "write a region target as region:CLASS:mask.npy or region:CLASS:y0,x0,y1,x1.");
    Target c = parse(rest.substr(0, colon), class_names);
    CANDELA_CHECK(c.kind_ == Kind::kIndex, "a region target names one class: region:CLASS:..., got '", text, "'.");
    int64_t cls = c.indices_[0];
    std::string where = rest.substr(colon + 1);
    if (where.size() > 4 && where.substr(where.size() - 4) == ".npy") return region(cls, read_npy(where));
    auto b = ints(where);
    CANDELA_CHECK(b.size() == 4, "a box is four integers y0,x0,y1,x1; got '", where, "'.");
    return box(cls, b[0], b[1], b[2], b[3]);
  }
  std::vector<int64_t> out;
  for (const auto& item : detail::split(text, ',')) {
    long long v = 0;
    if (detail::parse_int64(item, v)) {
      CANDELA_CHECK(v >= 0, "target class must be non-negative, got ", item, ".");
      out.push_back(v);
    } else {
      auto it = std::find(class_names.begin(), class_names.end(), item);
      CANDELA_CHECK(it != class_names.end(), "target '", item,
                    "' is neither 'top1', a class index, nor a class name of this model.",
                    did_you_mean(item, class_names));
      out.push_back(it - class_names.begin());
    }
  }
  return out.size() == 1 ? index(out[0]) : indices(out);
}

std::string Target::describe() const {
  switch (kind_) {
    case Kind::kTop1: return "top1";
    case Kind::kIndex: return std::to_string(indices_[0]);
    case Kind::kIndices: {
      std::string s;
      for (auto c : indices_) s += (s.empty() ? "" : ",") + std::to_string(c);
      return s;
    }
    case Kind::kFunction: return description_.empty() ? "function" : description_;
  }
  return "";
}

at::Tensor Target::scores(const at::Tensor& output, const at::Tensor& sample_of_row) const {
  const int64_t rows = output.size(0);
  if (kind_ == Kind::kFunction && !fn_) return token_scores(indices_, output, sample_of_row, description_);
  if (kind_ == Kind::kFunction) {
    at::Tensor s = fn_(output);
    CANDELA_CHECK(s.defined() && s.dim() == 1 && s.size(0) == rows, "the target function must return one score "
                  "per row ([", rows, "]), got ", s.defined() ? shape_str(s.sizes()) : "nothing", ".");
    return s;
  }
  if (output.dim() == 1 || (output.dim() == 2 && output.size(1) == 1)) {
    // A single output (regression, or a binary logit): class 0 is the only target.
    for (auto c : indices_)
      CANDELA_CHECK(c == 0, "target class ", c, " is out of range: the model has a single output (use 0 or top1).");
    return output.reshape({rows});
  }
  const int64_t classes = output.size(1);
  at::Tensor flat = output.reshape({rows, classes, -1});
  at::Tensor idx;
  if (kind_ == Kind::kTop1) {
    CANDELA_CHECK(output.dim() == 2, "top1 needs an output of shape [N, classes], got ", shape_str(output.sizes()),
                  "; give a class index or a target function.");
    idx = output.detach().argmax(1);
  } else {
    for (auto c : indices_)
      CANDELA_CHECK(c < classes, "target class ", c, " is out of range: the model has ", classes,
                    " outputs (0..", classes - 1, ").");
    if (kind_ == Kind::kIndex) {
      idx = at::full({rows}, indices_[0], at::TensorOptions().dtype(at::kLong).device(output.device()));
    } else {
      auto table = at::tensor(indices_, at::kLong).to(output.device());
      auto s = sample_of_row.to(output.device());
      CANDELA_CHECK(s.numel() == 0 || s.max().item<int64_t>() < static_cast<int64_t>(indices_.size()),
                    "there are more samples than the ", indices_.size(), " per-sample targets given.");
      idx = table.index_select(0, s);
    }
  }
  return flat.gather(1, idx.view({rows, 1, 1}).expand({rows, 1, flat.size(2)})).sum({1, 2});
}

std::vector<int64_t> Target::classes(const at::Tensor& output) const {
  const int64_t n = output.size(0);
  switch (kind_) {
    case Kind::kTop1: {
      if (output.dim() == 1) return std::vector<int64_t>(n, 0);
      auto a = output.detach().reshape({n, output.size(1), -1}).sum(2).argmax(1).to(at::kCPU).contiguous();
      return std::vector<int64_t>(a.data_ptr<int64_t>(), a.data_ptr<int64_t>() + n);
    }
    case Kind::kIndex: return std::vector<int64_t>(n, indices_[0]);
    case Kind::kIndices:
      CANDELA_CHECK(static_cast<int64_t>(indices_.size()) == n, "the target gives ", indices_.size(),
                    " classes but there are ", n, " samples; give one class per sample or a single class.");
      return indices_;
    case Kind::kFunction: return {};
  }
  return {};
}

Target Target::resolve(const at::Tensor& output) const {
  if (kind_ != Kind::kTop1) return *this;
  Target t = indices(classes(output));
  t.description_ = "top1";
  return t;
}

Target Target::gather(const std::vector<int64_t>& source) const {
  if (kind_ == Kind::kFunction && !fn_ && indices_.size() > kTokenTriple) {  // per-sample token targets
    Target t = *this;
    t.indices_.clear();
    for (auto s : source)
      for (size_t k = 0; k < kTokenTriple; ++k) t.indices_.push_back(indices_.at(s * kTokenTriple + k));
    return t;
  }
  if (kind_ != Kind::kIndices) return *this;
  std::vector<int64_t> out;
  out.reserve(source.size());
  for (auto s : source) out.push_back(indices_.at(s));
  Target t = *this;
  t.indices_ = std::move(out);
  return t;
}

}  // namespace candela
