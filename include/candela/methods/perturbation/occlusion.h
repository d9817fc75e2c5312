// Occlusion (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"),
// exactly as Captum's Occlusion. A window of `sliding_window_shapes` (per-sample shape, all
// dimensions) starts with its corner at index 0 and moves by `strides` until it has covered
// each dimension: ceil((size - window) / stride) + 1 positions per dimension, at k * stride,
// the last one cut off at the border when the stride does not divide size - window.
// Definition: a_i = mean over the windows W containing i of f_t(x) - f_t(x with W set to
// the baseline).
//
// Defaults (Captum has none for the window): an empty `sliding_window_shapes` means, for image
// inputs, all channels times a square of side max(1, round(min(H, W) / 15)) (15 on 224 x 224),
// and then, when `strides` is empty too, a stride of ceil(side / 2) (8): Captum's tutorial
// setting (3, 15, 15) / (3, 8, 8). For other inputs it means a window of 1 in every dimension
// (each element alone, which is feature ablation). Given windows with empty `strides` get
// Captum's stride of 1 in every dimension; one stride value applies to every dimension.
//
// Speed: on a convolutional image model each occluded row re-runs the early layers only on the
// crop its window reaches and the rest on the input's activation (Model::forward_local: the same
// outputs, float32 rounding apart; resnet18, 32x32 windows at stride 16: 1.28x the whole graph).
#pragma once

#include "candela/core/method.h"

#include <vector>

namespace candela {

struct OcclusionOptions {
  std::vector<int64_t> sliding_window_shapes;
  std::vector<int64_t> strides;
  int64_t perturbations_per_eval = 0;
  template <class V> void visit(V& v) {
    v("sliding_window_shapes", sliding_window_shapes,
      "Per-sample shape of the occluding window, e.g. 3,15,15 for [3, 224, 224] inputs. Empty: for images all "
      "channels x a square of side min(H, W) / 15; otherwise 1 per dimension.");
    v("strides", strides,
      "Step of the window per dimension (one value: every dimension). Empty: 1 per dimension, or half the "
      "default image window when that is used.");
    v("perturbations_per_eval", perturbations_per_eval,
      "Most windows evaluated per model call (rows = windows x samples), as in Captum; 0 (default; Captum: 1) lets the evaluator "
      "choose within --max-memory. Affects speed only.");
  }
  void validate() const;
};

class Occlusion : public Method<Occlusion, OcclusionOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "occlusion",
      .family = "perturbation",
      .description = "Average drop of the target score when a sliding window over the element is set to the baseline "
                     "(Captum's Occlusion).",
      .reference = "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
      .uses_baseline = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
