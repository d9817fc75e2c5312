// Attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").
// Definition: the layers' residual-augmented attention maps Â_l (as in attention rollout) are
// the capacities of a layered graph, one node per token and layer; the attribution of input
// token j is the maximum flow from j at the bottom to position token_index at the top,
// normalised to sum to 1 over the input tokens (the paper's normalisation): [N, L]. Solved
// exactly with Dinic's algorithm, one flow per input token (extra.raw_flow keeps the
// unnormalised values).
#pragma once

#include "candela/core/method.h"

#include <string>
#include <vector>

namespace candela {

struct AttentionFlowOptions {
  std::vector<std::string> layers;
  std::string head_fusion = "mean";
  int64_t token_index = 0;
  template <class V> void visit(V& v) {
    v("layers", layers, "Attention-probability modules, first layer first (empty: every Softmax module whose output "
                        "is [N, H, L, L]).");
    v("head_fusion", head_fusion, "How heads are fused: mean, max or min.", {"mean", "max", "min"});
    v("token_index", token_index, "The position at the top that the flow goes to (0: [CLS]).");
  }
  void validate() const;
};

class AttentionFlow : public Method<AttentionFlow, AttentionFlowOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "attention_flow",
      .family = "attention",
      .description = "Maximum flow from each input token to [CLS] through the layered graph of residual attention "
                     "maps, normalised to sum to 1.",
      .reference = "Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers",
      .uses_target = false};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
