// Guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity: The All
// Convolutional Net"). Definition: the gradient of the target with each ReLU's backward
// replaced by g_in = max(g_out, 0) * [x > 0], as Captum's GuidedBackprop (which also keeps
// every other layer's gradient and does not multiply by the input). The model's output is
// unchanged; only the backward pass differs.
#pragma once

#include "candela/core/method.h"

namespace candela {

struct GuidedBackpropOptions {
  template <class V> void visit(V&) {}
  void validate() const {}
};

class GuidedBackprop : public Method<GuidedBackprop, GuidedBackpropOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "guided_backprop",
      .family = "propagation",
      .description = "Gradient with ReLUs passing only positive gradients where the input was positive.",
      .reference = "Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net"};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
