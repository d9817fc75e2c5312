// Layer gradient x activation (Captum's LayerGradientXActivation; Shrikumar et al. 2016, "Not
// Just a Black Box", applied to a hidden layer). Definition: a = h(x) * d f_t(x) / d h(x), where
// h is the layer's output (the gradient alone with multiply_by_inputs = false).
#pragma once

#include "candela/core/explainer.h"

#include <string>
#include <vector>

namespace candela {

class LayerGradientXActivation : public Explainer {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options {
    std::vector<std::string> layers;
    bool multiply_by_inputs = true;
    template <class V> void visit(V& v) {
      v("layers", layers, "The one layer to explain, by dotted module path (`candela info MODEL` lists them).");
      v("multiply_by_inputs", multiply_by_inputs,
        "Multiply the layer gradient by the layer's activation (false: the gradient alone).");
    }
    void validate() const;
  };
  LayerGradientXActivation() : LayerGradientXActivation(Options{}) {}
  explicit LayerGradientXActivation(Options options);
  std::string name() const override { return "layer_gradient_x_activation"; }
  nlohmann::json options() const override;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
