// Baseline: the reference input of a method (core/baseline.h).
#include "candela/core/baseline.h"


#include <ATen/ATen.h>

#include <cmath>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"
#include "candela/detail/text.h"
#include "candela/io/npy.h"

namespace candela {
using detail::shape_str;
using detail::str_cat;

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

Baseline Baseline::for_sample(int64_t i, const at::Tensor& inputs) const {
  if (kind_ != Kind::kTensor || value_.dim() != inputs.dim() || value_.size(0) != inputs.size(0) ||
      inputs.size(0) == 1)
    return *this;
  Baseline b = *this;
  b.value_ = value_.slice(0, i, i + 1);
  return b;
}

Baseline Baseline::parse(const std::string& text) {
  auto number = [&](const std::string& s) {
    double v = 0;
    CANDELA_CHECK(detail::parse_double(s, v), "baseline '", text, "': '", s, "' is not a number.");
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

}  // namespace candela
