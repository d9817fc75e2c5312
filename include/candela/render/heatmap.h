// Attribution maps as pictures: normalisation (Captum's rules), colouring, and overlay on the input.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace candela {

struct HeatmapOptions {
  std::string sign = "auto";      // "signed" | "absolute" | "positive" | "negative" | "auto" (signed when the map has both signs)
  double clip_percentile = 99.0;  // values beyond this percentile of |a| are clipped (Captum's visualization default is 2% outliers: 98; we use 99)
  double alpha = 0.5;             // overlay opacity of the heatmap over the image
  std::string colormap = "";      // default: "bwr" for signed, "inferno" otherwise
  int64_t min_size = 256;         // upscale small maps (nearest) so the PNG is viewable
  void validate() const;          // ranges: percentile in (0,100], alpha in [0,1], known sign/colormap, min_size in [0, 8192]
};

// attribution: [C, H, W] (one sample) or [H, W]. Channels are reduced by sum ("signed",
// "positive", "negative", and "auto"'s choice) or by sum of |.| ("absolute"). "positive" keeps
// the positive part, "negative" the magnitude of the negative part. "auto" resolves to
// "signed" when the summed map has both signs, "negative" when it has only negative values,
// else "positive".
// Clipping follows Captum's _cumulative_sum_threshold: the threshold is the smallest |value| at
// which the running sum of the sorted |values| reaches clip_percentile % of their total; values
// are divided by it and clipped to [-1, 1]. So a few extreme pixels cannot wash out the rest.
// Returns float [H, W] in [0, 1]; for "signed", 0.5 is zero. An all-zero map gives the zero
// value (0.5 signed, else 0). NaN or infinite values throw InvalidArgument.
// `resolved_sign`, when given, receives the sign used ("auto" resolved).
at::Tensor normalise_map(const at::Tensor& attribution, const HeatmapOptions& opt,
                         std::string* resolved_sign = nullptr);

// The colormapped map alone, uint8 [H', W', 3] RGB, where H' and W' are H and W times the
// smallest integer factor that brings the longer side to at least min_size (nearest-neighbour,
// so each attribution cell stays a crisp square).
at::Tensor render_heatmap(const at::Tensor& attribution, const HeatmapOptions& opt);

// The map blended over the image: uint8 [H', W', 3] RGB, upscaled as render_heatmap.
// image: float [C, H, W] in [0, 1], C = 1 or 3, the same H and W as the attribution.
// "signed" maps use per-pixel opacity alpha * |value| (value in [-1, 1]), so areas with no
// attribution show the image undimmed; other signs use a uniform opacity alpha.
at::Tensor render_overlay(const at::Tensor& attribution, const at::Tensor& image, const HeatmapOptions& opt);

}  // namespace candela
