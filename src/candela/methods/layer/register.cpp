#include "candela/core/registry.h"
#include "candela/methods/layer/layer_activation.h"
#include "candela/methods/layer/layer_conductance.h"
#include "candela/methods/layer/layer_gradient_x_activation.h"
#include "candela/methods/layer/layer_integrated_gradients.h"
#include "candela/methods/layer/neuron_gradient.h"
#include "candela/methods/layer/neuron_integrated_gradients.h"

namespace candela {

void register_layer_methods(Registry& r) {
  auto act = method_info<LayerActivation>("layer_activation", "layer", "The layer's output at the input (no target).",
                                          "Kokhlikyan et al. 2020, Captum (LayerActivation)");
  act.uses_target = false;
  r.add(act);
  r.add(method_info<LayerGradientXActivation>("layer_gradient_x_activation", "layer",
                                              "The layer's output times the target's gradient with respect to it.",
                                              "Shrikumar et al. 2016, Not Just a Black Box"));
  auto lig = method_info<LayerIntegratedGradients>(
      "layer_integrated_gradients", "layer",
      "Integrated gradients in a layer's output space, on the straight path from the baseline's activation to "
      "the input's; sums to f(x) - f(baseline).",
      "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks");
  lig.completeness = true;
  r.add(lig);
  auto cond = method_info<LayerConductance>(
      "layer_conductance", "layer",
      "Conductance of each neuron of a layer: its gradient times its change along the input path from the "
      "baseline; sums to f(x) - f(baseline).",
      "Dhamdhere, Sundararajan & Yan 2018, How Important Is a Neuron?");
  cond.completeness = true;
  r.add(cond);
  // The neuron methods explain a neuron (neuron_selector), not the target.
  auto ng = method_info<NeuronGradient>("neuron_gradient", "layer",
                                        "Gradient of one neuron of a layer (neuron_selector) with respect to the input.",
                                        "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks");
  ng.uses_target = false;
  r.add(ng);
  auto nig = method_info<NeuronIntegratedGradients>(
      "neuron_integrated_gradients", "layer",
      "Integrated gradients of one neuron of a layer (neuron_selector) with respect to the input; sums to "
      "neuron(x) - neuron(baseline).",
      "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks");
  nig.uses_target = false;
  r.add(nig);
}

}  // namespace candela
