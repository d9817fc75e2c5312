// Neuron gradient (Captum's NeuronGradient; Simonyan, Vedaldi & Zisserman 2014, "Deep Inside
// Convolutional Networks", for a hidden neuron). Definition: a = d h_j(x) / d x, h_j the layer
// output's element `neuron_selector` (per sample). The request's target is not used.
#pragma once

#include "candela/core/method.h"

#include <string>
#include <vector>

namespace candela {

struct NeuronGradientOptions {
  std::vector<std::string> layers;
  std::vector<int64_t> neuron_selector;
  template <class V> void visit(V& v) {
    v("layers", layers, "The one layer holding the neuron, by dotted module path (`candela info MODEL`).");
    v("neuron_selector", neuron_selector,
      "Index of the neuron in the layer's output for one sample, one index per dimension (e.g. 3,1,1 for "
      "channel 3, row 1, column 1 of a convolution's output).");
  }
  void validate() const;
};

class NeuronGradient : public Method<NeuronGradient, NeuronGradientOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "neuron_gradient",
      .family = "layer",
      .description = "Gradient of one neuron of a layer (neuron_selector) with respect to the input.",
      .reference = "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks",
      .uses_target = false};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
