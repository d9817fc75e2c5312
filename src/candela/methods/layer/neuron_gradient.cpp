#include "candela/methods/layer/neuron_gradient.h"

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/graph/taps.h"
#include "candela/methods/gradient/common.h"
#include "common.h"

namespace candela {

void NeuronGradient::Options::validate() const {
  detail::check_one_layer(layers, "neuron_gradient");
  detail::check_neuron_selector(neuron_selector, "neuron_gradient");
}

Attribution NeuronGradient::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const auto taps_ptr = LayerTaps::of(ev.model(), options_.layers);
  const LayerTaps& taps = *taps_ptr;
  at::Tensor grads = at::empty_like(x);
  std::vector<at::Tensor> outs;
  ev.gradients(
      "neuron_gradient", x.size(0), detail::slice_rows(x),
      Evaluator::Scorer([&](const at::Tensor& in, const Rows&) {
        auto run = taps.forward(in);
        const at::Tensor& h = run.activations[0];
        const int64_t offset = detail::neuron_offset(options_.neuron_selector, h.sizes().slice(1),
                                                     options_.layers[0], "neuron_gradient");
        return std::make_pair(detail::select_neuron(h, offset), run.output);
      }),
      [&](int64_t b, int64_t e, const Rows&, const at::Tensor& g, const at::Tensor& out) {
        grads.slice(0, b, e).copy_(g);
        outs.push_back(out);
      });
  Attribution a;
  a.values = grads;
  a.output = at::cat(outs);
  a.extra = {{"layer", options_.layers[0]}, {"neuron_selector", options_.neuron_selector}};
  return a;
}

}  // namespace candela
