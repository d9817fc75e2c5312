// Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021, "Generic Attention-model
// Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", self-attention
// rule). Definition: R = I; for each layer, first to last, R += E_h[(∇A ⊙ A)^+] · R, with ∇A the
// gradient of the target score with respect to that layer's attention probabilities A; the
// attribution of input token j is R[token_index, j]: [N, L].
#pragma once

#include "candela/core/method.h"

#include <string>
#include <vector>

namespace candela {

struct GradAttentionRolloutOptions {
  std::vector<std::string> layers;
  int64_t token_index = 0;
  template <class V> void visit(V& v) {
    v("layers", layers, "Attention-probability modules, first layer first (empty: every Softmax module whose output "
                        "is [N, H, L, L]).");
    v("token_index", token_index, "The position whose relevance row is reported (0: [CLS]).");
  }
  void validate() const;
};

class GradAttentionRollout : public Method<GradAttentionRollout, GradAttentionRolloutOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "grad_attention_rollout",
      .family = "attention",
      .description = "Attention rollout with each map weighted by the positive part of gradient x attention for the "
                     "target (class-specific).",
      .reference = "Chefer, Gur & Wolf 2021, Generic Attention-model Explainability for Interpreting Bi-Modal and "
                   "Encoder-Decoder Transformers"};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
