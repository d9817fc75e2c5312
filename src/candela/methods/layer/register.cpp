#include "candela/core/registry.h"
#include "candela/methods/layer/layer_activation.h"
#include "candela/methods/layer/layer_conductance.h"
#include "candela/methods/layer/layer_gradient_x_activation.h"
#include "candela/methods/layer/layer_integrated_gradients.h"
#include "candela/methods/layer/neuron_gradient.h"
#include "candela/methods/layer/neuron_integrated_gradients.h"

namespace candela {

void register_layer_methods(Registry& r) {
  r.add<LayerActivation>();
  r.add<LayerGradientXActivation>();
  r.add<LayerIntegratedGradients>();
  r.add<LayerConductance>();
  // The neuron methods explain a neuron (neuron_selector), not the target.
  r.add<NeuronGradient>();
  r.add<NeuronIntegratedGradients>();
}

}  // namespace candela
