// Global surrogate decision tree (Craven & Shavlik 1996, "Extracting Tree-Structured
// Representations of Trained Networks"; the global surrogate of Molnar's Interpretable
// Machine Learning, ch. 8.6). Definition: a CART tree (OpenCV's cv::ml::DTrees, Gini
// impurity for classes, squared error for a regression output) fitted to the model's own
// predictions on the given rows: the predicted class (argmax of an [N, C] output, C > 1)
// or the single output (as a regression). The rows should be a data set, not one instance.
//
// Result: values = each feature's share of the tree's total impurity decrease (sklearn's
// feature_importances_: sum over the feature's splits of n_node * impurity - n_left *
// impurity_left - n_right * impurity_right on the rows, normalised to sum to 1; all 0 for a
// tree with no split), the same for every row [N, ...]. extra: rules (one per leaf, left to
// right: {rule: "if x0 > 0.5 and x1 <= 2 then yes", conditions, prediction, coverage (share
// of rows reaching the leaf), fidelity (share of those where the tree's prediction is the
// model's; regression: mean_absolute_error instead)}), fidelity (classification: share of
// rows where tree and model agree; regression: R^2 of the tree against the model's output),
// depth, leaves, task. A split sends x <= threshold left (OpenCV's rule); thresholds in the
// rule text have 4 significant digits, the exact float is in `conditions`.
//
// OpenCV's tree differs from sklearn's in its stopping rule: min_samples_leaf maps to
// setMinSampleCount, which stops splitting a node that small (it does not bound the size
// of the leaves a split makes); a regression node stops splitting when its outputs' spread
// is below 1e-6 of theirs overall. No pruning (CVFolds = 0), no surrogate splits. One row,
// or one prediction everywhere, gives a single leaf ("always ...") and zero importances.
#pragma once

#include "candela/core/method.h"

#include <vector>

namespace candela {

struct SurrogateTreeOptions {
  int64_t max_depth = 4;
  int64_t min_samples_leaf = 5;
  std::vector<std::string> feature_names;
  template <class V> void visit(V& v) {
    v("max_depth", max_depth, "Deepest split level of the tree (1 = one split).");
    v("min_samples_leaf", min_samples_leaf,
      "Nodes this small are not split (OpenCV's minSampleCount).");
    v("feature_names", feature_names,
      "Names of the input's elements for the rules; empty = the model's feature names, else f0, f1, ...");
  }
  void validate() const;
};

class SurrogateTree : public Method<SurrogateTree, SurrogateTreeOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "surrogate_tree",
      .family = "global",
      .description = "A global CART tree fitted to the model's predictions over the rows: if-then rules with coverage "
                     "and fidelity; values are the tree's impurity-decrease feature importances.",
      .reference = "Craven & Shavlik 1996, Extracting Tree-Structured Representations of Trained Networks",
      .uses_target = false};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
