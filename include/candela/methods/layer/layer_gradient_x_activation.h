// Layer gradient x activation (Captum's LayerGradientXActivation; Shrikumar et al. 2016, "Not
// Just a Black Box", applied to a hidden layer). Definition: a = h(x) * d f_t(x) / d h(x), where
// h is the layer's output (the gradient alone with multiply_by_inputs = false).
#pragma once

#include "candela/core/method.h"

#include <string>
#include <vector>

namespace candela {

struct LayerGradientXActivationOptions {
  std::vector<std::string> layers;
  bool multiply_by_inputs = true;
  template <class V> void visit(V& v) {
    v("layers", layers, "The one layer to explain, by dotted module path (`candela info MODEL` lists them).");
    v("multiply_by_inputs", multiply_by_inputs,
      "Multiply the layer gradient by the layer's activation (false: the gradient alone).");
  }
  void validate() const;
};

class LayerGradientXActivation : public Method<LayerGradientXActivation, LayerGradientXActivationOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "layer_gradient_x_activation",
      .family = "layer",
      .description = "The layer's output times the target's gradient with respect to it.",
      .reference = "Shrikumar et al. 2016, Not Just a Black Box"};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
