// Layer-wise relevance propagation (Bach et al. 2015, "On Pixel-Wise Explanations for
// Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation"; composites after
// Kohlbrenner et al. 2020 and zennit, Anders et al. 2021).
// Definition: relevance R starts at the output (the one-hot target, zennit's
// attributor(x, one_hot); or the target's score) and is redistributed layer by layer to the
// input; each linear or convolution layer uses the rule its composite assigns (zennit's
// closed forms: epsilon R_in = x * W^T(R / stab(z)), gamma, alpha-beta, z-plus, flat, w-square,
// z-box), activations and unfolded batch norms pass relevance on, additions and average
// pooling split it in proportion to their inputs (Norm rule), max pooling gives it to the
// maximum, and BatchNorm after a convolution is folded into it first. extra.relevance reports
// conservation: the relevance at the output, the sum at the input, and their ratio.
// The fold keeps the model's function (torch.jit's FoldFrozenConvBatchnorm, the batch norm's eps
// included), so every rule sees the model's own activations. zennit 0.5.1's MergeBatchNorm does
// not: it leaves the emptied batch norm computing x / sqrt(1 + eps), which shrinks the
// activations after each one by 5e-6 (eps 1e-5) but not the biases, and moves the z-plus,
// epsilon and Norm shares after it; zennit 1.0.0 sets eps to 0 (commit c30e3cc). That is the
// whole 4.4e-4 between this and zennit 0.5.1 on resnet18 (1.8e-7 with the fix applied to
// 0.5.1): bench/compare/README.md, bench/compare/zennit_merge_bn.py.
#pragma once

#include <string>
#include <vector>

#include "candela/core/method.h"
#include "candela/methods/propagation/lrp_rules.h"
#include "candela/methods/propagation/rule_graph.h"

namespace candela {

struct LrpOptions {
  std::string composite = "epsilon_plus";
  std::string rule;  // non-empty: this rule for every layer instead of a composite
  double epsilon = 1e-6;
  double stabilizer = 1e-6;
  double gamma = 0.25;
  double alpha = 2.0;
  double beta = 1.0;
  std::vector<double> low, high;
  std::string output_relevance = "one_hot";
  template <class V> void visit(V& v) {
    static const std::string composites = join_names(Composite::builtin_names()) +
                                          " (zennit's), or a JSON file (--composite).";
    static const std::string rules = "One rule for every layer instead of a composite: " + lrp_layer_rule_list() + ".";
    v("composite", composite, composites.c_str());
    v("rule", rule, rules.c_str());
    v("epsilon", epsilon, "Stabiliser of the epsilon rule.");
    v("stabilizer", stabilizer, "Stabiliser of every other rule.");
    v("gamma", gamma, "Weight of positive contributions in the gamma rule.");
    v("alpha", alpha, "Alpha of the alpha-beta rule (alpha - beta = 1).");
    v("beta", beta, "Beta of the alpha-beta rule.");
    v("low", low, "z-box lower bound of the input (one value or one per channel); default: from the input spec.");
    v("high", high, "z-box upper bound of the input; default: from the input spec.");
    v("output_relevance", output_relevance,
      "Relevance at the output: one_hot (1 at the target, zennit's usual call) or score (the target's value).",
      std::vector<std::string>{"one_hot", "score"});
  }
  void validate() const;
};

struct InputSpec;
// The rule graph settings lrp uses for these options (z-box bounds from the spec when not given);
// `defaults`, when given, receives the rule parameters every composite entry starts from.
RuleSettings lrp_rule_settings(const LrpOptions& options, const InputSpec& spec, LrpRule* defaults = nullptr);

class Lrp : public Method<Lrp, LrpOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "lrp",
      .family = "propagation",
      .description = "Layer-wise relevance propagation with zennit's rules and composites (--composite).",
      .reference = "Bach et al. 2015, Layer-Wise Relevance Propagation; Anders et al. 2021, zennit"};
  // The composites and rules `candela methods` lists with lrp.
  static nlohmann::json catalog() { return lrp_catalog(); }
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
