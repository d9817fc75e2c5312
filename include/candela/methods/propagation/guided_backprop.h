// Guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity: The All
// Convolutional Net"). Definition: the gradient of the target with each ReLU's backward
// replaced by g_in = max(g_out, 0) * [x > 0], as Captum's GuidedBackprop (which also keeps
// every other layer's gradient and does not multiply by the input). The model's output is
// unchanged; only the backward pass differs.
#pragma once

#include "candela/core/explainer.h"

namespace candela {

class GuidedBackprop : public Explainer {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options {
    template <class V> void visit(V&) {}
    void validate() const {}
  };
  GuidedBackprop() : GuidedBackprop(Options{}) {}
  explicit GuidedBackprop(Options options) : options_(options) {}
  std::string name() const override { return "guided_backprop"; }
  nlohmann::json options() const override;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
