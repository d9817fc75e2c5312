// RISE (Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of
// Black-box Models"). Masks M_i: an s x s grid of Bernoulli(p1) cells, upsampled bilinearly
// to (s + 1) * ceil(H / s) x (s + 1) * ceil(W / s) and cropped to H x W at a random shift in
// [0, ceil(H / s)) x [0, ceil(W / s)) (the paper's construction). Definition:
//   S = sum_i f_t(x_i') M_i / (n_masks * p1),  x_i' = M_i x + (1 - M_i) b,
// with the baseline b = 0 by default (the paper's x * M_i). The normalisation by N * p1 is
// the reference code's (an unbiased Monte-Carlo estimate of E[f_t(x') M] / p1).
// Notes: the upsampling is torch's bilinear with half-pixel centres and clamped edges (the
// reference uses skimage's resize, whose 'reflect' border differs in the outer half cell);
// scores are the target's score of the raw output (the paper used probabilities: give a
// model that outputs them, or a function target, for that). Mask i comes from its own
// generator detail::seeded_generator(seed, i), so results do not depend on the batch size,
// and every sample of a batch sees the same masks. Values are the map broadcast over the
// channels. extra["standard_error"] summarises the Monte-Carlo standard error of S per pixel
// (its mean and max, and the mean relative to mean |S|).
#pragma once

#include "candela/core/method.h"

namespace candela {

struct RiseOptions {
  int64_t n_masks = 4000;
  int64_t grid_size = 7;
  double p1 = 0.5;
  int64_t seed = 0;
  template <class V> void visit(V& v) {
    v("n_masks", n_masks, "Number of random masks (the paper uses 4000 for ResNet50 on ImageNet).");
    v("grid_size", grid_size, "Cells per side of the random grid (s).");
    v("p1", p1, "Probability that a grid cell is kept.");
    v("seed", seed, "Seed of the masks.");
  }
  void validate() const;
};

class Rise : public Method<Rise, RiseOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "rise",
      .family = "perturbation",
      .description = "Average of random smooth masks weighted by the target score of the masked input.",
      .reference = "Petsiuk, Das & Saenko 2018, RISE: Randomized Input Sampling for Explanation of Black-box Models",
      .uses_baseline = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

  // Masks first..first+count-1 for an H x W image: float [count, H, W] in [0, 1].
  at::Tensor masks(int64_t first, int64_t count, int64_t height, int64_t width) const;
};

}  // namespace candela
