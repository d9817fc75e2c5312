#include "candela/render/heatmap.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>

#include "candela/core/error.h"
#include "candela/render/colormap.h"

namespace candela {
namespace {

constexpr std::array<const char*, 5> kSigns = {"signed", "absolute", "positive", "negative", "auto"};
constexpr int64_t kMaxMinSize = 8192;

// Captum's _cumulative_sum_threshold on non-negative values: the smallest value at which the
// running sum of the sorted values reaches `percentile` % of the total; 0 for an all-zero map.
double cumulative_sum_threshold(const at::Tensor& values, double percentile) {
  const auto sorted = std::get<0>(values.reshape({-1}).contiguous().sort());
  const double* v = sorted.data_ptr<double>();
  const int64_t n = sorted.numel();
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += v[i];
  if (total <= 0) return 0;
  // Same summation order as `total`, so with percentile 100 the last value is reached exactly.
  const double target = total * percentile / 100;
  double running = 0;
  for (int64_t i = 0; i < n; ++i) {
    running += v[i];
    if (running >= target) return v[i];
  }
  return v[n - 1];
}

// Nearest-neighbour upscaling of [H, W, ...] by the smallest integer factor that brings the
// longer side to min_size. The longer side, so a 1 x 1000 map is not blown up to 256 x 256000.
at::Tensor upscale(const at::Tensor& t, int64_t min_size) {
  const int64_t longer = std::max(t.size(0), t.size(1));
  if (longer >= min_size) return t;
  const int64_t k = (min_size + longer - 1) / longer;
  return t.repeat_interleave(k, 0).repeat_interleave(k, 1);
}

std::string colormap_for(const HeatmapOptions& opt, const std::string& sign) {
  if (!opt.colormap.empty()) return opt.colormap;
  return sign == "signed" ? "bwr" : "inferno";
}

}  // namespace

void HeatmapOptions::validate() const {
  if (std::find(kSigns.begin(), kSigns.end(), sign) == kSigns.end()) {
    throw InvalidArgument(detail::str_cat("unknown heatmap sign '", sign, "'.",
                                          did_you_mean(sign, {kSigns.begin(), kSigns.end()}),
                                          " Valid signs: signed, absolute, positive, negative, auto."));
  }
  CANDELA_CHECK(clip_percentile > 0 && clip_percentile <= 100, "heatmap clip_percentile is ", clip_percentile,
                "; it must be in (0, 100]. Use 100 to disable clipping.");
  CANDELA_CHECK(alpha >= 0 && alpha <= 1, "heatmap alpha is ", alpha, "; it must be in [0, 1].");
  if (!colormap.empty()) check_colormap_name(colormap);
  CANDELA_CHECK(min_size >= 0 && min_size <= kMaxMinSize, "heatmap min_size is ", min_size, "; it must be in [0, ",
                kMaxMinSize, "]. Use 0 to disable upscaling.");
}

at::Tensor normalise_map(const at::Tensor& attribution, const HeatmapOptions& opt, std::string* resolved_sign) {
  opt.validate();
  CANDELA_CHECK_T(ShapeMismatch, attribution.defined() && (attribution.dim() == 2 || attribution.dim() == 3),
                  "a heatmap needs one sample's attribution of shape [C, H, W] or [H, W], got ",
                  attribution.defined() ? detail::str_cat(attribution.sizes()) : "an undefined tensor",
                  ". For a batch, render each sample: attribution[i].");
  CANDELA_CHECK_T(ShapeMismatch, attribution.numel() > 0, "cannot render an empty attribution of shape ",
                  attribution.sizes(), ".");
  auto a = attribution.detach().cpu().to(at::kDouble);
  if (a.dim() == 2) a = a.unsqueeze(0);
  CANDELA_CHECK(a.isfinite().all().item<bool>(),
                "cannot render an attribution that contains NaN or infinite values. Check the model and the ",
                "method's settings (e.g. a division by zero or too large inputs).");

  const auto summed = a.sum(0);
  std::string sign = opt.sign;
  if (sign == "auto") {
    const bool pos = (summed > 0).any().item<bool>(), neg = (summed < 0).any().item<bool>();
    sign = pos && neg ? "signed" : neg ? "negative" : "positive";
  }
  at::Tensor m = sign == "signed"     ? summed
                 : sign == "absolute" ? a.abs().sum(0)
                 : sign == "positive" ? summed.clamp_min(0)
                                      : summed.neg().clamp_min(0);
  const double threshold = cumulative_sum_threshold(m.abs(), opt.clip_percentile);
  at::Tensor out = threshold > 0 ? (m / threshold).clamp(-1, 1) : at::zeros_like(m);
  if (sign == "signed") out = out * 0.5 + 0.5;
  if (resolved_sign != nullptr) *resolved_sign = sign;
  return out.to(at::kFloat);
}

at::Tensor render_heatmap(const at::Tensor& attribution, const HeatmapOptions& opt) {
  std::string sign;
  const auto m = normalise_map(attribution, opt, &sign);
  return apply_colormap(upscale(m, opt.min_size), colormap_for(opt, sign));
}

at::Tensor render_overlay(const at::Tensor& attribution, const at::Tensor& image, const HeatmapOptions& opt) {
  std::string sign;
  const auto m = normalise_map(attribution, opt, &sign);
  CANDELA_CHECK_T(ShapeMismatch,
                  image.defined() && image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3) &&
                      image.size(1) == m.size(0) && image.size(2) == m.size(1),
                  "the overlay image must be [1 or 3, ", m.size(0), ", ", m.size(1), "] to match the attribution, got ",
                  image.defined() ? detail::str_cat(image.sizes()) : "an undefined tensor",
                  ". Pass the model input the attribution explains, or resize the attribution to the image.");
  auto img = image.detach().cpu().to(at::kFloat);
  // A small tolerance admits interpolation overshoot; anything beyond is a normalised or
  // 0..255 image, which would render as noise or solid white.
  const double lo = img.min().item<double>(), hi = img.max().item<double>();
  CANDELA_CHECK(lo >= -0.01 && hi <= 1.01, "the overlay image has values in [", lo, ", ", hi,
                "]; it must be in [0, 1]. Pass the image before mean/std normalisation, 8-bit values divided by 255.");
  img = img.clamp(0, 1).expand({3, -1, -1}).permute({1, 2, 0});

  const auto heat = apply_colormap(m, colormap_for(opt, sign)).to(at::kFloat) / 255;
  const auto alpha = (sign == "signed" ? (m * 2 - 1).abs() * opt.alpha : at::full_like(m, opt.alpha)).unsqueeze(-1);
  const auto blended = img * (1 - alpha) + heat * alpha;
  return upscale(blended, opt.min_size).mul(255).round().clamp(0, 255).to(at::kByte);
}

}  // namespace candela
