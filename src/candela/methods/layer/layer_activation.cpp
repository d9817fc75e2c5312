#include "candela/methods/layer/layer_activation.h"

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/graph/taps.h"
#include "common.h"

namespace candela {

void LayerActivation::Options::validate() const { detail::check_one_layer(layers, "layer_activation"); }

Attribution LayerActivation::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const auto taps_ptr = LayerTaps::of(ev.model(), options_.layers);
  const LayerTaps& taps = *taps_ptr;
  auto run = detail::tapped_forward(ev, taps, "layer_activation", req.inputs);
  Attribution a;
  a.values = run.activation;
  a.output = run.output;
  a.layer = options_.layers[0];
  return a;
}

}  // namespace candela
