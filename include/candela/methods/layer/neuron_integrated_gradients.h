// Neuron Integrated Gradients (Captum's NeuronIntegratedGradients; Sundararajan, Taly & Yan 2017,
// "Axiomatic Attribution for Deep Networks", explaining a hidden neuron). Definition:
// a = (x - b) * sum_k w_k d h_j(b + alpha_k (x - b)) / d x, h_j the layer output's element
// `neuron_selector`. The request's target is not used. The convergence delta is the neuron's:
// sum(a) - (h_j(x) - h_j(b)) (Captum reports none).
#pragma once

#include "candela/core/method.h"
#include "candela/methods/gradient/integrated_gradients.h"

#include <string>
#include <vector>

namespace candela {

struct NeuronIntegratedGradientsOptions {
  std::vector<std::string> layers;
  std::vector<int64_t> neuron_selector;
  int64_t n_steps = 50;
  std::string method = "gausslegendre";
  int64_t internal_batch_size = 0;
  bool multiply_by_inputs = true;
  template <class V> void visit(V& v) {
    v("layers", layers, "The one layer holding the neuron, by dotted module path (`candela info MODEL`).");
    v("neuron_selector", neuron_selector,
      "Index of the neuron in the layer's output for one sample, one index per dimension (e.g. 3,1,1 for "
      "channel 3, row 1, column 1 of a convolution's output).");
    visit_path_options(v, *this,
                       "Multiply the path-integrated gradient by (input - baseline) (false: the local attribution). The "
                       "convergence delta is always that of the global attribution.");
  }
  void validate() const;
};

class NeuronIntegratedGradients : public Method<NeuronIntegratedGradients, NeuronIntegratedGradientsOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "neuron_integrated_gradients",
      .family = "layer",
      .description = "Integrated gradients of one neuron of a layer (neuron_selector) with respect to the input; sums "
                     "to neuron(x) - neuron(baseline).",
      .reference = "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks",
      .uses_baseline = true,
      .uses_target = false};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
