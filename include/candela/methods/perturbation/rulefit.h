// RuleFit (Friedman & Popescu 2008, "Predictive Learning via Rule Ensembles"), as a global
// surrogate beside surrogate_tree. Definition: F(x) = a_0 + sum_k a_k r_k(x) + sum_j b_j l_j(x),
// fitted to the model's own response on the rows, where
//  - the rules r_k are every node but the root of a tree ensemble, as conjunctions of the splits
//    on the path to it (x <= c / x > c; several splits on one column give an interval). The trees
//    are Friedman's ISLE ensemble (section 3.3): gradient boosting on squared error with shrinkage
//    learning_rate (0.01), each tree on a random subsample of min(N/2, 100 + 6 sqrt(N)) rows drawn
//    without replacement, its size random with mean tree_size terminal nodes (t = 2 + floor(g),
//    g ~ exponential with mean tree_size - 2); OpenCV's cv::ml::DTrees (CART) bounds depth, not
//    leaves, so a tree of t terminal nodes is grown to depth ceil(log2 t). n_estimators trees
//    (0: ceil(max_rules / (2 (tree_size - 1))), Friedman's M for about max_rules rules). Rules with
//    support 0 or 1 on the rows, and rules equal on the rows to one already kept (the shorter
//    wins), are dropped; then the first max_rules.
//  - the linear terms l_j(x) = 0.4 min(d+_j, max(d-_j, x_j)) / std(.) (eq. 26): winsorised at the
//    beta and 1 - beta quantiles (beta = 0.025) and scaled to the std of a typical rule.
//  - a, b minimise 1/(2N) ||y - a_0 - Z a||^2 + alpha ||a||_1 (sklearn's Lasso objective) by
//    cyclic coordinate descent with covariance updates and active sets (glmnet), until no
//    coefficient moves the fit by more than 1e-4 std(y). alpha = 0 (default): chosen like sklearn's
//    LassoCV(n_alphas=100, eps=1e-3, cv=5): a geometric path from alpha_max = max|Z_c'(y - mean)| / N
//    down to 1e-3 alpha_max, warm-started, the alpha with the lowest mean squared error over 5
//    folds (rows shuffled by seed); the final fit on every row.
// The response y: a regression output ([N] or [N, 1]) as it is; a classifier's probability of
// class_index (softmax of logits; the output as it is for a model whose output kind is
// probabilities), so the rules are a one-vs-rest surrogate of that class. Default class_index -1:
// class 1 of a two-class model, else the class the model predicts most often on the rows.
//
// Result: values = Friedman's feature importance J_l = I_l + sum_{rules k containing l} I_k / m_k
// (eq. 35; I_k = |a_k| sqrt(s_k (1 - s_k)) for a rule of support s_k with m_k columns, I_l = |b_l|
// std(l_l) for a linear term), as shares that sum to 1 (0 everywhere when no term survives), the
// same for every row. extra: terms (every non-zero term, most important first: {type rule|linear,
// rule text, conditions, support, coefficient, importance}), intercept, alpha, candidate rules,
// fidelity (R^2 of F against y on the rows; and for a classifier, agreement: the share of rows where
// F > 0.5 exactly when the model predicts class_index), response, class_index, feature_importance.
#pragma once

#include "candela/core/method.h"

#include <vector>

namespace candela {

struct RuleFitOptions {
  int64_t tree_size = 4;
  int64_t max_rules = 2000;
  int64_t n_estimators = 0;
  double learning_rate = 0.01;
  bool include_linear = true;
  double winsorize = 0.025;
  double alpha = 0.0;
  int64_t cv = 5;
  int64_t n_alphas = 100;
  int64_t class_index = -1;
  std::vector<std::string> feature_names;
  int64_t seed = 0;
  template <class V> void visit(V& v) {
    v("tree_size", tree_size, "Mean number of terminal nodes per tree (Friedman's L, >= 2).");
    v("max_rules", max_rules, "Most candidate rules kept for the lasso.");
    v("n_estimators", n_estimators, "Trees in the ensemble; 0 = ceil(max_rules / (2 (tree_size - 1))).");
    v("learning_rate", learning_rate, "Shrinkage of the boosted trees (Friedman's nu).");
    v("include_linear", include_linear, "Add winsorised, scaled linear terms for every feature.");
    v("winsorize", winsorize, "Quantile beta at which linear terms are clipped (both tails).");
    v("alpha", alpha, "Lasso penalty; 0 = chosen by cross-validation over a path (LassoCV).");
    v("cv", cv, "Folds of the cross-validation that chooses alpha.");
    v("n_alphas", n_alphas, "Penalties on the cross-validated path.");
    v("class_index", class_index,
      "Classifier: the class whose probability is explained; -1 = class 1 of two, else the most predicted.");
    v("feature_names", feature_names,
      "Names of the input's elements for the rules; empty = the model's feature names, else f0, f1, ...");
    v("seed", seed, "Seed of the subsamples, tree sizes and folds.");
  }
  void validate() const;
};

class RuleFit : public Method<RuleFit, RuleFitOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "rulefit",
      .family = "global",
      .description = "A sparse linear model over rules from a boosted tree ensemble (and linear terms), fitted "
                     "to the model's output over the rows: rules with support, coefficient and importance.",
      .reference = "Friedman & Popescu 2008, Predictive Learning via Rule Ensembles",
      .uses_target = false};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

namespace detail {
// Lasso by coordinate descent with an intercept: argmin 1/(2N) ||y - a0 - Z a||^2 + alpha ||a||_1.
// z [N, K], y [N] (double). Returns (coefficients [K], intercept).
std::pair<at::Tensor, double> lasso_fit(const at::Tensor& z, const at::Tensor& y, double alpha, double tol = 1e-7,
                                        int64_t max_iter = 10000);
}  // namespace detail

}  // namespace candela
