// Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").
// Definition: with each layer's attention fused over heads (mean, max or min) and made
// residual, Â_l = 0.5 A_l + 0.5 I (rows renormalised; optionally the lowest discard_ratio share
// of entries dropped first, as in jacobgil/vit-explain), the rollout is Â_L ... Â_1 and the
// attribution of input token j is its row `token_index` (0: [CLS]), entry j: [N, L], each row a
// probability distribution over the input tokens. No target: it explains the model's attention,
// not a class.
#pragma once

#include "candela/core/method.h"

#include <string>
#include <vector>

namespace candela {

struct AttentionRolloutOptions {
  std::vector<std::string> layers;  // the attention-probability modules; empty: every Softmax with [N, H, L, L] output
  std::string head_fusion = "mean";
  double discard_ratio = 0.0;
  int64_t token_index = 0;
  template <class V> void visit(V& v) {
    v("layers", layers, "Attention-probability modules, first layer first (empty: every Softmax module whose output "
                        "is [N, H, L, L]).");
    v("head_fusion", head_fusion, "How heads are fused: mean, max or min.", {"mean", "max", "min"});
    v("discard_ratio", discard_ratio, "Share of the lowest fused attention entries dropped per layer, in [0, 1).");
    v("token_index", token_index, "The position whose rollout row is reported (0: [CLS]).");
  }
  void validate() const;
};

class AttentionRollout : public Method<AttentionRollout, AttentionRolloutOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "attention_rollout",
      .family = "attention",
      .description = "The product of the layers' residual-augmented attention maps: how much each input token "
                     "reaches [CLS] through attention alone.",
      .reference = "Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers",
      .uses_target = false};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
