// LIME (Ribeiro, Singh & Guestrin 2016, "Why Should I Trust You?": Explaining the
// Predictions of Any Classifier), as lime's LimeTabularExplainer, LimeImageExplainer and
// LimeTextExplainer define it. Definition: sample z_1..z_S in an interpretable binary (or
// standardised) space around x (z_1 = x), weight each by pi(z) = sqrt(exp(-d(x, z)^2 /
// width^2)), and fit a weighted linear surrogate g(z) = b + w.z to f_t(z); each feature's
// attribution is its coefficient w_j (every input element of a feature gets it).
//
// The mode follows the input (or the `mode` option):
//  - tabular (layout "NC", or 2-d inputs): training statistics from the request's baseline
//    distribution (its rows are the training data). discretize_continuous: z_j = 1 when the
//    sampled value falls in x_j's quartile (or decile) bin, sampled bins drawn with their
//    training frequencies and undiscretised by a truncated normal fitted to the bin (lime's
//    QuartileDiscretizer); otherwise z = N(0,1) draws, the model sees z * std + mean (or
//    + x with sample_around_instance), and the surrogate is fitted on z, so w_j ~ df/dx_j *
//    std_j. Distance: Euclidean in z; default width sqrt(columns) * 0.75.
//  - image (NCHW / NHWC): features are the request's feature_mask segments (superpixels);
//    z in {0,1}^G uniformly (z_1 = all on), a hidden segment shows `hide_color` (default:
//    the segment's per-channel mean, lime's hide_color=None). Distance: cosine to all-on;
//    default width 0.25.
//  - text (layout "NL", token ids stored as floats): features are the distinct tokens
//    (bow, lime's default) or positions, or the feature_mask's groups; a sample removes a
//    uniform number 1..G of them, chosen uniformly, replacing each by `mask_token`.
//    Distance: cosine x 100; default width 25.
//
// Feature selection, surrogate and score as lime_base.LimeBase: "auto" is forward
// selection (greedy, unregularised least squares, best weighted R^2) when num_features <= 6,
// else "highest_weights" (the num_features largest |coef * z_1| of a Ridge(alpha=0.01) fit);
// "none" keeps every feature. The surrogate is Ridge(alpha, fit_intercept=True) with sample
// weights pi (normal equations in double), or Lasso: sklearn's objective
//   1 / (2 sum pi) * sum_s pi_s (y_s - b - w.z_s)^2 + alpha ||w||_1
// by cyclic coordinate descent to convergence. extra: score (weighted R^2 of the surrogate
// on its samples), intercept, local_prediction (g(z_1)), standard_error (ridge only: the
// sandwich sqrt(diag(s^2 A^-1 Z'WZ A^-1)), A = Z'WZ + alpha I on centred z, s^2 = sum pi r^2
// / (S - k - 1), as if pi were inverse variances), and for tabular inputs lime's feature
// descriptions ("age <= 30.00") with their weights, largest first.
//
// Deviations from lime: the surrogate explains the model's target output as given (lime
// expects probabilities); lime's undiscretisation returns the bin's z-score (not a value)
// when a bin's minimum equals its maximum, we return that value; the text mode works on
// token ids, not on strings; the image mode uses the given superpixels instead of running
// quickshift; image and text use the same num_samples / num_features defaults as tabular
// (lime's explain_instance for images defaults to 1000 samples and all features).
#pragma once

#include "candela/core/method.h"

#include <vector>

namespace candela {

struct LimeOptions {
  std::string mode = "auto";
  int64_t num_samples = 5000;
  double kernel_width = 0.0;
  std::string feature_selection = "auto";
  int64_t num_features = 10;
  std::string regressor = "ridge";
  double alpha = 1.0;
  bool discretize_continuous = true;
  std::string discretizer = "quartile";
  bool sample_around_instance = false;
  std::vector<double> hide_color;
  int64_t mask_token = 0;
  bool bow = true;
  int64_t seed = 0;
  template <class V> void visit(V& v) {
    v("mode", mode, "auto (from the input's layout), tabular, image or text.", {"auto", "tabular", "image", "text"});
    v("num_samples", num_samples, "Size of the neighbourhood (the instance included).");
    v("kernel_width", kernel_width,
      "Width of the exponential kernel; 0 = lime's default: sqrt(columns) * 0.75 (tabular), 0.25 (image), "
      "25 on cosine distance x 100 (text).");
    v("feature_selection", feature_selection,
      "auto (forward_selection if num_features <= 6, else highest_weights), none, forward_selection, "
      "highest_weights.",
      {"auto", "none", "forward_selection", "highest_weights"});
    v("num_features", num_features, "Largest number of features with a non-zero weight.");
    v("regressor", regressor, "Surrogate: ridge or lasso (weighted, with intercept).", {"ridge", "lasso"});
    v("alpha", alpha, "Regularisation of the surrogate (lime's Ridge(alpha=1)).");
    v("discretize_continuous", discretize_continuous,
      "Tabular: explain with binary 'in the instance's bin' features (lime's default).");
    v("discretizer", discretizer, "Tabular bins: quartile or decile.", {"quartile", "decile"});
    v("sample_around_instance", sample_around_instance,
      "Tabular without discretisation: centre the Gaussian draws on the instance, not the training mean.");
    v("hide_color", hide_color,
      "Image: value of a hidden superpixel, one number or one per channel; empty = the superpixel's mean.");
    v("mask_token", mask_token, "Text: token id that replaces a removed token (also never a feature).");
    v("bow", bow, "Text: one feature per distinct token (bag of words) rather than per position.");
    v("seed", seed, "Seed of the sampling.");
  }
  void validate() const;
};

class Lime : public Method<Lime, LimeOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "lime",
      .family = "perturbation",
      .description = "A weighted linear surrogate fitted to the model on samples around the input (tabular rows: "
                     "training-data statistics from --baseline dist:...; images: superpixels from --features; text: "
                     "token ids).",
      .reference = "Ribeiro, Singh & Guestrin 2016, \"Why Should I Trust You?\": Explaining the Predictions of Any "
                   "Classifier",
      .uses_baseline = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

// A weighted linear fit with intercept, in double, as lime fits its surrogate.
struct LinearSurrogate {
  std::vector<int64_t> features;     // columns of z used, in selection order
  std::vector<double> coef;          // one per column of z (0 for unused columns)
  std::vector<double> standard_error;  // one per column (0 for unused); empty for lasso
  double intercept = 0.0;
  double score = 0.0;                // weighted R^2 on the samples
  double local_prediction = 0.0;     // the fit at z[0]
};
// z [S, d], y [S], weights [S] (any floating dtype). Lime's feature selection, then the
// regressor. Exposed for tests.
LinearSurrogate fit_lime_surrogate(const at::Tensor& z, const at::Tensor& y, const at::Tensor& weights,
                                   const std::string& feature_selection, int64_t num_features,
                                   const std::string& regressor, double alpha);

}  // namespace candela
