// Counterfactual explanations for tabular classifiers: the nearest rows that the model puts in
// another class, under the user's feature constraints.
//
// Both methods optimise with Adam in DiCE's min-max normalised space z = (x - min) / (max - min)
// (min, max: the background's, or a constraint's range) and project every step onto the
// constraints: immutable features fixed, ranges, monotone directions (a feature may only rise, or
// only fall); after optimising, one-hot groups take their arg-max and integer features are rounded
// (a feature left at the query's value keeps it, integer or not).
// The target is a class t; its margin m_t(x) = f_t(x) - max_{k != t} f_k(x) on the logits (for a
// binary model with two logits exactly DiCE's log(p / (1 - p)); generalised to multiclass).
//
// - DiCE, gradient method (Mothilal, Sharma & Tan 2020; dice_ml's DicePyTorch, defaults:
//   proximity_weight 0.5, diversity_weight 1.0, categorical_penalty 0.1, Adam learning_rate 0.05,
//   min_iter 500, max_iter 5000, loss_diff_thres 1e-5, CF k initialised at the query + 0.01 k):
//   for the K counterfactuals c_1..c_K of a row x,
//     loss = yloss + proximity_weight * proximity - diversity_weight * diversity
//            + categorical_penalty * regularisation,
//     yloss        = 1/K sum_k relu(1 - m_t(c_k))                            (hinge_loss)
//     proximity    = 1/(K F) sum_k sum_f |c_kf - x_f| / mad_f               (inverse-MAD weights,
//                    mad_f on the normalised background; 1 where it is 0)
//     diversity    = det(D), D_ij = 1 / (1 + sum_f |c_if - c_jf| / mad_f), D_ii += 1e-4   (dpp_style:inverse_dist;
//                    0 for K = 1)
//     regularisation = sum_k sum_groups (sum_{f in group} c_kf - 1)^2       (one-hot groups)
//   Stops after min_iter once every counterfactual has m_t > 0 and the loss moved < loss_diff_thres.
//   Then DiCE's post-hoc sparsity (posthoc_sparsity_param 0.1): feature by feature, a change smaller
//   than that quantile of the background's |x_f - median_f| is undone where the counterfactual keeps
//   the target class (DiCE's "linear" variant walks back in steps; here the change is undone whole
//   or kept). Not applied to Wachter.
// - Wachter, Mittelstadt & Russell 2017 (alibi's Counterfactual defaults: target_proba 1.0, tol 0.05,
//   lam_init 0.1, max_lam_steps 10, max_iter 1000 per lambda, early_stop 50, learning_rate_init 0.1):
//     loss = lambda (p_t(c) - target_proba)^2 + sum_f |c_f - x_f| / mad_f
//   with lambda raised tenfold while no counterfactual within tol is found and bisected once one is;
//   the closest valid one is kept. K > 1 starts the K runs at the query + 0.01 k.
//
// Quality per row (Mothilal et al. 2020): validity (share of the K distinct counterfactuals that
// reach t), proximity (mean over counterfactuals of the MAD-scaled L1 distance per feature, in raw
// units: lower is closer), sparsity (1 - share of features changed, averaged), diversity (mean
// MAD-scaled L1 distance per feature over pairs) and count diversity (share of features that differ,
// over pairs).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "candela/core/batching.h"
#include "candela/core/error.h"

namespace candela {

class Model;

struct CounterfactualOptions {
  std::string method = "dice";  // dice, wachter
  int64_t count = 4;            // K counterfactuals per row (DiCE's total_CFs)
  double proximity_weight = 0.5, diversity_weight = 1.0, categorical_penalty = 0.1;
  double learning_rate = 0.05;
  int64_t min_iter = 500, max_iter = 5000;
  double loss_diff_thres = 1e-5;
  double posthoc_sparsity_param = 0.1;  // DiCE: quantile below which a change is undone if still valid
  // Wachter
  double target_proba = 1.0, tol = 0.05, lam_init = 0.1;
  int64_t max_lam_steps = 10, wachter_max_iter = 1000, early_stop = 50;
  double wachter_learning_rate = 0.1;
  // Images (image_counterfactuals)
  double image_learning_rate = 0.01, l1_weight = 0.01, kappa = 0.1;

  template <class V> void visit(V& v) {
    v("method", method, "Counterfactual method: dice (gradient, diverse) or wachter.", {"dice", "wachter"});
    v("count", count, "Counterfactuals per row (DiCE's total_CFs).");
    v("proximity_weight", proximity_weight, "DiCE: weight of the MAD-scaled L1 proximity loss.");
    v("diversity_weight", diversity_weight, "DiCE: weight of the determinantal diversity loss.");
    v("categorical_penalty", categorical_penalty, "DiCE: weight of the one-hot sum-to-one penalty.");
    v("learning_rate", learning_rate, "DiCE: Adam's learning rate.");
    v("min_iter", min_iter, "DiCE: iterations before convergence is checked.");
    v("max_iter", max_iter, "DiCE: most iterations.");
    v("loss_diff_thres", loss_diff_thres, "DiCE: loss change that counts as converged.");
    v("posthoc_sparsity_param", posthoc_sparsity_param,
      "DiCE: changes smaller than this quantile of |x - median| are undone where the class stays (0: off).");
    v("target_proba", target_proba, "Wachter: probability of the target class to reach.");
    v("tol", tol, "Wachter: |p_t - target_proba| that counts as reached.");
    v("lam_init", lam_init, "Wachter: first weight of the prediction loss.");
    v("max_lam_steps", max_lam_steps, "Wachter: lambda updates.");
    v("wachter_max_iter", wachter_max_iter, "Wachter: Adam iterations per lambda (images: the most steps).");
    v("early_stop", early_stop, "Wachter: iterations with every row valid that end a lambda step (images: steps "
      "after the first valid point).");
    v("wachter_learning_rate", wachter_learning_rate, "Wachter: Adam's learning rate.");
    v("image_learning_rate", image_learning_rate, "Images: proximal-gradient step in pixel units.");
    v("l1_weight", l1_weight, "Images: weight of the L1 penalty on the pixel change (sparsity).");
    v("kappa", kappa, "Images: target-logit margin over the best other class that counts as reached.");
  }
  void validate() const;
};

// Feature constraints, read from JSON:
//   {"immutable": ["age", 3], "ranges": {"income": [0, 1e5]}, "integer": ["children"],
//    "categorical": [["color_red", "color_green", "color_blue"]], "monotone": {"age": "increase"}}
// Features are named by name (the CSV header or the model's feature names) or by index.
struct FeatureConstraints {
  std::vector<int64_t> immutable, integer;
  std::vector<std::vector<int64_t>> categorical;  // one-hot groups
  std::vector<std::pair<int64_t, std::pair<double, double>>> ranges;
  std::vector<std::pair<int64_t, int>> monotone;  // +1 increase, -1 decrease
  static FeatureConstraints from_json(const nlohmann::json& j, const std::vector<std::string>& feature_names,
                                      int64_t features);
  nlohmann::json to_json() const;
};

struct CounterfactualResult {
  at::Tensor counterfactuals;  // [N, K, F] raw feature space
  at::Tensor valid;            // bool [N, K]: the model puts it in the target class
  at::Tensor predictions;      // int64 [N, K]
  at::Tensor targets;          // int64 [N]
  nlohmann::json report;       // per row: quality metrics; and the settings
};

// `target`: one class per row (int64 [N]). `background` [M, F] gives the normalisation and MADs.
CounterfactualResult counterfactuals(const Model& model, const at::Tensor& inputs, const at::Tensor& background,
                                     const at::Tensor& target, const FeatureConstraints& constraints,
                                     const CounterfactualOptions& options, const EvalOptions& eval = {});

// Image counterfactuals: a minimal, sparse change within the pixel range that moves each image to
// the target class. Wachter et al.'s objective with an L1 distance, minimised by proximal gradient
// (ISTA, so untouched pixels stay exactly untouched) in pixel space (the spec's range before its
// normalisation, as the adversarial probes), every step clipped to the range:
//   delta <- clip(x + soft_threshold(delta - lr * grad, lr * l1_weight)) - x,
//   grad of relu(kappa - m_t(x + delta)) (hinge on the target's logit margin, kappa = `kappa`),
// the closest valid point (smallest L1) kept; stops after `max_iter` steps or `early_stop` steps
// after the first valid one. Quality per image: validity, proximity (mean |delta| per pixel, and
// the L2 norm), sparsity (share of pixel values left unchanged), range (min and max of the result).
struct ImageCounterfactualOptions {
  double learning_rate = 0.01;  // per step, in pixel units
  double l1_weight = 0.01;      // beta: the L1 penalty on the change
  double kappa = 0.1;           // margin of the target logit over the best other that counts as reached
  int64_t max_iter = 1000, early_stop = 100;
};
struct ImageCounterfactualResult {
  at::Tensor counterfactuals;  // like the inputs (model input space)
  at::Tensor change;           // pixel-space change, like the inputs
  at::Tensor valid, predictions, targets;
  nlohmann::json report;
};
ImageCounterfactualResult image_counterfactuals(const Model& model, const at::Tensor& inputs, const at::Tensor& target,
                                                const ImageCounterfactualOptions& options, const EvalOptions& eval = {});

namespace detail {
// DiCE's loss terms per row for counterfactuals z [N, K, F] of rows xz [N, F] (normalised space),
// logits [N, K, C], target [N], weights 1/mad [F], one-hot groups. Each term is [N].
struct DiceTerms {
  at::Tensor yloss, proximity, diversity, regularisation;
};
DiceTerms dice_terms(const at::Tensor& z, const at::Tensor& xz, const at::Tensor& logits, const at::Tensor& target,
                     const at::Tensor& weights, const std::vector<std::vector<int64_t>>& groups);
// m_t = f_t - max_{k != t} f_k for logits [..., C] and target broadcast to [...].
at::Tensor target_margin(const at::Tensor& logits, const at::Tensor& target);
}  // namespace detail

}  // namespace candela
