// AttnLRP (Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
// Transformers", ICML) and CP-LRP (Ali et al. 2022, "XAI for Transformers: Better Explanations
// through Conservative Propagation"). Definition: relevance starts at the target's score and is
// propagated with, per op on the path from the explained layer to the output:
//   linear layers        epsilon rule            R_x = x * W^T (R_z / stab(z))
//   GELU, SiLU, ...      identity rule           R_x = R_y
//   LayerNorm            std held constant       (x - mean) / sigma, sigma a constant: a linear map
//   softmax              AttnLRP's rule          R_x = x * (R_y - s * sum(R_y))  (its gradient x input)
//                        CP-LRP: attention weights held constant (no relevance to the scores)
//   products of two activations (Q K^T, A V, gates; matmul, bmm, baddbmm, mul)
//                        uniform rule            each operand gets half: R_a = a * (R_z / z) b^T / 2
//   a division by an activation (a decomposed LayerNorm's std) holds the divisor constant;
//   sums, reshapes and products with constants are linear (LRP-0 / the gradient).
// Every rule above has the form R_in = x * g_in, so the method runs as one forward and one
// backward pass of a graph whose backward is modified per op (LXT's formulation) and reads
// R = h * g at the explained layer (an embedding: [N, L, D]; several layers of one shape are
// summed, e.g. token + position embeddings) or at the input when no layer is given.
// extra.rules names the rule of every node; extra.relevance reports conservation (the rules
// conserve exactly on bias-free models, except AttnLRP's softmax, whose bias term absorbs some).
#pragma once

#include <string>
#include <vector>

#include "candela/core/method.h"

namespace torch::jit {
struct Graph;
}

namespace candela {

struct AttnLrpOptions {
  std::vector<std::string> layers;
  std::string variant = "attn_lrp";
  double epsilon = 1e-6;
  template <class V> void visit(V& v) {
    v("layers", layers, "Where relevance is read: the embedding module(s), e.g. tok (several of one shape are summed); "
                        "empty: the model's input.");
    v("variant", variant, "attn_lrp (softmax by its gradient, products split uniformly) or cp_lrp (attention weights "
                          "held constant).", {"attn_lrp", "cp_lrp"});
    v("epsilon", epsilon, "Stabiliser of the epsilon and identity rules' divisions.");
  }
  void validate() const;
};

class AttnLrp : public Method<AttnLrp, AttnLrpOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "attn_lrp",
      .family = "propagation",
      .description = "LRP for transformers: LayerNorm with constant std, softmax by its gradient, products of two "
                     "activations split uniformly (or CP-LRP); one forward and one backward pass.",
      .reference = "Achtibat et al. 2024, AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for "
                   "Transformers (ICML); Ali et al. 2022, XAI for Transformers (CP-LRP)"};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

namespace detail {
// The rewrite itself: every op on the path from `roots` (the tap outputs, or the graph's input
// when `from_input`) to the output gets its rule; returns [{"path", "op", "rule"}] per node.
// UnsupportedModel names an op on the path with no rule.
nlohmann::json attn_lrp_rewrite(torch::jit::Graph& graph, bool cp_lrp, double epsilon, bool from_input);
}  // namespace detail

}  // namespace candela
