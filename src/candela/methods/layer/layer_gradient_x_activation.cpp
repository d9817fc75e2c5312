#include "candela/methods/layer/layer_gradient_x_activation.h"

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/graph/taps.h"
#include "common.h"

namespace candela {

void LayerGradientXActivation::Options::validate() const {
  detail::check_one_layer(layers, "layer_gradient_x_activation");
}

Attribution LayerGradientXActivation::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const auto taps_ptr = LayerTaps::of(ev.model(), options_.layers);
  const LayerTaps& taps = *taps_ptr;
  std::vector<at::Tensor> values, outs;
  // One forward + backward per sample; a top1 target scores each row's own argmax.
  ev.batched("layer_gradient_x_activation", x.size(0), ev.batch_size(true), [&](int64_t b, int64_t e) {
    at::AutoGradMode enable(true);
    // The input requires grad so that the layer is in the graph even when no parameter precedes it.
    auto run = taps.forward(x.slice(0, b, e).detach().requires_grad_(true));
    const at::Tensor& h = run.activations[0];
    at::Tensor sample = at::arange(b, e, at::TensorOptions().dtype(at::kLong).device(x.device()));
    at::Tensor g = detail::grad_or_zeros(req.target.scores(run.output, sample), h);
    values.push_back(options_.multiply_by_inputs ? g * h.detach() : g);
    outs.push_back(run.output.detach());
  });
  Attribution a;
  a.values = at::cat(values);
  a.output = at::cat(outs);
  a.targets = req.target.classes(a.output);
  a.layer = options_.layers[0];
  return a;
}

}  // namespace candela
