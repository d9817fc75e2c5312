// Neuron gradient (Captum's NeuronGradient; Simonyan, Vedaldi & Zisserman 2014, "Deep Inside
// Convolutional Networks", for a hidden neuron). Definition: a = d h_j(x) / d x, h_j the layer
// output's element `neuron_selector` (per sample). The request's target is not used.
#pragma once

#include "candela/core/explainer.h"

#include <string>
#include <vector>

namespace candela {

class NeuronGradient : public Explainer {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options {
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
  NeuronGradient() : NeuronGradient(Options{}) {}
  explicit NeuronGradient(Options options);
  std::string name() const override { return "neuron_gradient"; }
  nlohmann::json options() const override;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
