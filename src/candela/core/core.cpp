// Small core types: tensor helpers, Target, Baseline, Attribution, option parsing.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "candela/core/attribution.h"
#include "candela/core/baseline.h"
#include "candela/core/error.h"
#include "candela/core/options.h"
#include "candela/core/target.h"
#include "candela/detail/tensor_util.h"
#include "candela/io/npy.h"

namespace candela {
using detail::shape_str;
using detail::str_cat;

namespace {
// The whole of `text` as a base-10 int64: false when it is empty, has anything after the number,
// or does not fit (strtoll alone clamps to INT64_MAX without saying so).
bool parse_int64(const std::string& text, long long& value) {
  if (text.empty()) return false;
  char* stop = nullptr;
  errno = 0;
  value = std::strtoll(text.c_str(), &stop, 10);
  return errno != ERANGE && stop && *stop == '\0';
}
}  // namespace

// ---- tensor helpers ----------------------------------------------------------------
namespace detail {

std::string torch_message(const std::exception& e) {
  auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string s = c10_error ? c10_error->what_without_backtrace() : e.what();
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find('\n', start);
    if (end == std::string::npos) end = s.size();
    std::string line = s.substr(start, end - start);
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(line);
    start = end + 1;
  }
  if (lines.empty()) return "unknown error";
  // TorchScript errors end with "RuntimeError: <message>"; plain ones are one line.
  for (auto it = lines.rbegin(); it != lines.rend(); ++it)
    if (it->find("Error: ") != std::string::npos) return it->substr(it->find_first_not_of(" \t"));
  return lines.front();
}

std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

nlohmann::json tensor_to_json(const at::Tensor& t) {
  if (!t.defined()) return nullptr;
  auto c = t.detach().to(at::kCPU);
  bool integral = !c.is_floating_point();
  c = integral ? c.to(at::kLong).contiguous() : c.to(at::kDouble).contiguous();
  std::function<nlohmann::json(int64_t, int64_t)> rec = [&](int64_t dim, int64_t offset) -> nlohmann::json {
    if (dim == c.dim()) {
      if (integral) return c.data_ptr<int64_t>()[offset];
      double v = c.data_ptr<double>()[offset];
      return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    }
    nlohmann::json arr = nlohmann::json::array();
    for (int64_t i = 0; i < c.size(dim); ++i) arr.push_back(rec(dim + 1, offset + i * c.stride(dim)));
    return arr;
  };
  return rec(0, 0);
}

at::Tensor per_row(const at::Tensor& v, const at::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = v.size(0);
  return v.reshape(shape);
}

at::Generator seeded_generator(uint64_t seed, uint64_t stream) {
  // SplitMix64 of (seed, stream): nearby seeds and streams give unrelated generators.
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + stream + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return at::detail::createCPUGenerator(z ^ (z >> 31));
}

at::Tensor sum_per_sample(const at::Tensor& t) { return t.reshape({t.size(0), -1}).sum(1); }

}  // namespace detail

// ---- Target -----------------------------------------------------------------------------

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

Target Target::parse(const std::string& text, const std::vector<std::string>& class_names) {
  if (text.empty() || text == "top1") return top1();
  auto ints = [&](const std::string& list) {
    std::vector<int64_t> out;
    size_t start = 0;
    while (start <= list.size()) {
      size_t end = list.find(',', start);
      if (end == std::string::npos) end = list.size();
      std::string item = list.substr(start, end - start);
      long long v = 0;
      CANDELA_CHECK(parse_int64(item, v), "target '", text, "': '", item, "' is not an integer (or is out of range).");
      out.push_back(v);
      start = end + 1;
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
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    long long v = 0;
    if (parse_int64(item, v)) {
      CANDELA_CHECK(v >= 0, "target class must be non-negative, got ", item, ".");
      out.push_back(v);
    } else {
      auto it = std::find(class_names.begin(), class_names.end(), item);
      CANDELA_CHECK(it != class_names.end(), "target '", item,
                    "' is neither 'top1', a class index, nor a class name of this model.",
                    did_you_mean(item, class_names));
      out.push_back(it - class_names.begin());
    }
    start = end + 1;
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
  if (kind_ != Kind::kIndices) return *this;
  std::vector<int64_t> out;
  out.reserve(source.size());
  for (auto s : source) out.push_back(indices_.at(s));
  Target t = *this;
  t.indices_ = std::move(out);
  return t;
}

// ---- Baseline ---------------------------------------------------------------------------

Baseline Baseline::zeros() { return Baseline(); }
Baseline Baseline::constant(double value) {
  CANDELA_CHECK(std::isfinite(value), "baseline constant must be finite.");
  Baseline b;
  b.kind_ = Kind::kConstant;
  b.a_ = value;
  return b;
}
Baseline Baseline::blurred(double sigma) {
  CANDELA_CHECK(sigma > 0 && sigma < 1000, "blur sigma must be in (0, 1000), got ", sigma, ".");
  Baseline b;
  b.kind_ = Kind::kBlurred;
  b.a_ = sigma;
  return b;
}
Baseline Baseline::uniform(double low, double high) {
  CANDELA_CHECK(high > low, "uniform baseline needs low < high, got ", low, ",", high, ".");
  Baseline b;
  b.kind_ = Kind::kUniform;
  b.a_ = low;
  b.b_ = high;
  return b;
}
Baseline Baseline::tensor(at::Tensor value) {
  CANDELA_CHECK(value.defined(), "baseline tensor is undefined.");
  CANDELA_CHECK(at::isfinite(value).all().item<bool>(), "baseline tensor contains NaN or infinite values.");
  Baseline b;
  b.kind_ = Kind::kTensor;
  b.value_ = value.detach();  // its own dtype: a double model keeps a double reference
  return b;
}
Baseline Baseline::distribution(at::Tensor samples) {
  Baseline b = tensor(std::move(samples));
  CANDELA_CHECK(b.value_.dim() >= 1 && b.value_.size(0) >= 1, "a baseline distribution needs at least one sample.");
  b.kind_ = Kind::kDistribution;
  return b;
}

Baseline Baseline::parse(const std::string& text) {
  auto number = [&](const std::string& s) {
    char* stop = nullptr;
    double v = std::strtod(s.c_str(), &stop);
    CANDELA_CHECK(!s.empty() && stop && *stop == '\0', "baseline '", text, "': '", s, "' is not a number.");
    return v;
  };
  if (text.empty() || text == "zeros" || text == "zero") return zeros();
  auto colon = text.find(':');
  std::string head = text.substr(0, colon), arg = colon == std::string::npos ? "" : text.substr(colon + 1);
  if (head == "constant") return constant(number(arg));
  if (head == "blur" || head == "blurred") return blurred(arg.empty() ? 5.0 : number(arg));
  if (head == "uniform") {
    auto comma = arg.find(',');
    if (arg.empty()) return uniform(0.0, 1.0);
    CANDELA_CHECK(comma != std::string::npos, "baseline '", text, "': write uniform:LOW,HIGH.");
    return uniform(number(arg.substr(0, comma)), number(arg.substr(comma + 1)));
  }
  if (head == "dist" || head == "distribution") return distribution(read_npy(arg));
  if (text.size() > 4 && text.substr(text.size() - 4) == ".npy") return tensor(read_npy(text));
  throw InvalidArgument(str_cat("unknown baseline '", text,
                                "'; use zeros, constant:V, blur:SIGMA, uniform:LOW,HIGH, FILE.npy or dist:FILE.npy."));
}

std::string Baseline::describe() const {
  switch (kind_) {
    case Kind::kZeros: return "zeros";
    case Kind::kConstant: return str_cat("constant:", a_);
    case Kind::kBlurred: return str_cat("blur:", a_);
    case Kind::kUniform: return str_cat("uniform:", a_, ",", b_);
    case Kind::kTensor: return str_cat("tensor", shape_str(value_.sizes()));
    case Kind::kDistribution: return str_cat("distribution", shape_str(value_.sizes()));
  }
  return "";
}

namespace {
at::Tensor gaussian_blur(const at::Tensor& x, double sigma, const std::string& layout) {
  CANDELA_CHECK(x.dim() == 4 && (layout == "NCHW" || layout == "NHWC"),
                "a blurred baseline needs image inputs [N, C, H, W] or [N, H, W, C] with a known layout; "
                "got shape ", shape_str(x.sizes()), " and layout '", layout,
                "'. Give the layout with --layout NCHW (or NHWC), or add \"input\" to the model's .json.");
  at::Tensor img = layout == "NHWC" ? x.permute({0, 3, 1, 2}) : x;
  const int64_t n = img.size(0), c = img.size(1), h = img.size(2), w = img.size(3);
  int64_t radius = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(3 * sigma)));
  auto k = at::arange(-radius, radius + 1, x.options()).div(sigma).pow(2).mul(-0.5).exp();
  k = k / k.sum();
  at::Tensor flat = img.reshape({n * c, 1, h, w});
  // Replicate padding keeps the border's brightness (zero padding would darken it).
  flat = at::replication_pad2d(flat, {radius, radius, 0, 0});
  flat = at::conv2d(flat, k.view({1, 1, 1, -1}));
  flat = at::replication_pad2d(flat, {0, 0, radius, radius});
  flat = at::conv2d(flat, k.view({1, 1, -1, 1}));
  at::Tensor out = flat.reshape({n, c, h, w});
  return layout == "NHWC" ? out.permute({0, 2, 3, 1}).contiguous() : out;
}
}  // namespace

at::Tensor Baseline::for_inputs(const at::Tensor& inputs, const std::string& layout, uint64_t seed) const {
  switch (kind_) {
    case Kind::kZeros: return at::zeros_like(inputs);
    case Kind::kConstant: return at::full_like(inputs, a_);
    case Kind::kBlurred: return gaussian_blur(inputs.detach(), a_, layout);
    case Kind::kUniform: {
      auto gen = detail::seeded_generator(seed, 0x5eed);
      auto u = at::rand(inputs.sizes(), gen, at::TensorOptions().dtype(inputs.scalar_type()));
      return (u * (b_ - a_) + a_).to(inputs.device());
    }
    case Kind::kTensor: {
      at::Tensor v = value_.to(inputs.device(), inputs.scalar_type());
      auto per_sample = inputs.sizes().slice(1);
      if (v.sizes() == per_sample) return v.unsqueeze(0).expand_as(inputs).contiguous();
      if (v.dim() == inputs.dim() && v.sizes().slice(1) == per_sample && (v.size(0) == 1 || v.size(0) == inputs.size(0)))
        return v.expand_as(inputs).contiguous();
      throw ShapeMismatch(str_cat("baseline has shape ", shape_str(v.sizes()), " but the inputs have shape ",
                                  shape_str(inputs.sizes()), "; give one baseline ", shape_str(per_sample),
                                  " or one per input."));
    }
    case Kind::kDistribution:
      throw InvalidArgument("this method takes one baseline per input, not a distribution; use gradient_shap or "
                            "expected_gradients for a baseline distribution, or give a single baseline tensor.");
  }
  return {};
}

at::Tensor Baseline::samples(const at::Tensor& inputs, const std::string& layout, uint64_t seed) const {
  if (kind_ != Kind::kDistribution) return for_inputs(inputs, layout, seed);
  CANDELA_CHECK_T(ShapeMismatch, value_.sizes().slice(1) == inputs.sizes().slice(1), "baseline distribution has ",
                  "samples of shape ", shape_str(value_.sizes().slice(1)), " but the inputs have ",
                  shape_str(inputs.sizes().slice(1)), ".");
  return value_.to(inputs.device(), inputs.scalar_type());
}

// ---- Attribution -------------------------------------------------------------------------

void Attribution::warn(const std::string& code, const std::string& message, nlohmann::json values) {
  warnings.push_back({{"code", code}, {"message", message}, {"values", std::move(values)}});
}

nlohmann::json Attribution::metadata() const {
  nlohmann::json j;
  j["method"] = method;
  if (!layer.empty()) j["layer"] = layer;
  if (spatial_map) j["spatial_map"] = true;
  j["options"] = options;
  j["target"] = target;
  j["targets"] = targets;
  if (!baseline.empty()) j["baseline"] = baseline;
  if (values.defined()) j["shape"] = std::vector<int64_t>(values.sizes().begin(), values.sizes().end());
  j["output"] = detail::tensor_to_json(output);
  if (output.defined() && output.dim() == 2 && output.size(1) > 1)
    j["predicted"] = detail::tensor_to_json(output.argmax(1));
  j["convergence_delta"] = detail::tensor_to_json(convergence_delta);
  if (output_change.defined()) j["output_change"] = detail::tensor_to_json(output_change);
  j["warnings"] = warnings;
  j["model_evaluations"] = model_evaluations;
  j["batch_size"] = batch_size;
  j["wall_seconds"] = wall_seconds;
  j["extra"] = extra;
  return j;
}

// ---- options -------------------------------------------------------------------------------

nlohmann::json parse_option_value(const nlohmann::json& schema, const std::string& method, const std::string& key,
                                  const std::string& text) {
  if (!schema.contains(key)) {
    std::vector<std::string> keys;
    for (const auto& [k, _] : schema.items()) keys.push_back(k);
    std::string list;
    for (const auto& k : keys) list += (list.empty() ? "" : ", ") + k;
    throw InvalidArgument(str_cat("unknown option '", key, "' for method '", method, "'.", did_you_mean(key, keys),
                                  keys.empty() ? " It takes no options." : " Its options are: " + list + "."));
  }
  const std::string type = schema[key].value("type", "string");
  auto fail = [&](const char* what) {
    return InvalidArgument(str_cat("option '", key, "' of '", method, "' expects ", what, ", got '", text, "'."));
  };
  if (type == "integer") {
    long long v = 0;
    if (!parse_int64(text, v)) throw fail("an integer (in the 64-bit range)");
    return v;
  }
  if (type == "number") {
    char* stop = nullptr;
    double v = std::strtod(text.c_str(), &stop);
    if (text.empty() || *stop != '\0' || !std::isfinite(v)) throw fail("a finite number");
    return v;
  }
  if (type == "boolean") {
    std::string t = text;
    std::transform(t.begin(), t.end(), t.begin(), ::tolower);
    if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
    if (t == "false" || t == "0" || t == "no" || t == "off") return false;
    throw fail("true or false (also True/False, 1/0, yes/no, on/off)");
  }
  if (type == "string") return text;
  if ((type == "string[]" || type == "integer[]" || type == "number[]") && !text.empty() && text[0] != '[') {
    // Comma-separated: --option layers=layer3,layer4 or --option neuron_selector=3,1,1
    nlohmann::json list = nlohmann::json::array();
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find(',', start);
      if (end == std::string::npos) end = text.size();
      std::string item = text.substr(start, end - start);
      if (type == "string[]") {
        list.push_back(item);
      } else {
        char* stop = nullptr;
        double v = std::strtod(item.c_str(), &stop);
        if (item.empty() || *stop != '\0') throw fail(type == "integer[]" ? "comma-separated integers" : "comma-separated numbers");
        if (type == "integer[]") {
          if (!(std::abs(v) < 9.2e18) || v != static_cast<double>(static_cast<int64_t>(v)))
            throw fail("comma-separated integers");
          list.push_back(static_cast<int64_t>(v));
        } else {
          list.push_back(v);
        }
      }
      start = end + 1;
    }
    return list;
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    throw fail("JSON");
  }
}

}  // namespace candela
