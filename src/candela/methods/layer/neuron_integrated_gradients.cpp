#include "candela/methods/layer/neuron_integrated_gradients.h"

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/taps.h"
#include "candela/methods/gradient/integrated_gradients.h"
#include "common.h"

namespace candela {
using detail::per_row;

void NeuronIntegratedGradients::Options::validate() const {
  detail::check_one_layer(layers, "neuron_integrated_gradients");
  detail::check_neuron_selector(neuron_selector, "neuron_integrated_gradients");
  check_path_options("neuron_integrated_gradients", n_steps, method, internal_batch_size, 2);
}

Attribution NeuronIntegratedGradients::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0), steps = options_.n_steps;
  const std::string& layer = options_.layers[0];
  const auto taps_ptr = LayerTaps::of(ev.model(), options_.layers);
  const LayerTaps& taps = *taps_ptr;
  const at::Tensor base = req.baseline.for_inputs(x, ev.model().input_spec().layout, 0);
  const at::Tensor diff = x - base;

  // The neuron at x and at the baseline (checks the selector before the path's passes).
  auto ends = detail::tapped_forward(ev, taps, "neuron_integrated_gradients: endpoints", at::cat({x, base}));
  const int64_t offset =
      detail::neuron_offset(options_.neuron_selector, ends.activation.sizes().slice(1), layer, "neuron_integrated_gradients");
  const at::Tensor neuron = detail::select_neuron(ends.activation, offset);

  std::vector<double> alphas, weights;
  quadrature(options_.method, steps, alphas, weights);
  const auto opts = x.options();
  const at::Tensor alpha_t = at::tensor(alphas, at::kDouble).to(opts), weight_t = at::tensor(weights, at::kDouble).to(opts);
  at::Tensor total = at::zeros_like(x);
  ev.gradients(
      "neuron_integrated_gradients", n * steps,
      [&](int64_t b, int64_t e) {
        auto p = detail::path_rows(base, diff, alpha_t, b, e);
        return Rows{p.points, p.sample, p.step};
      },
      Evaluator::Scorer([&](const at::Tensor& in, const Rows&) {
        auto run = taps.forward(in);
        return std::make_pair(detail::select_neuron(run.activations[0], offset), run.output);
      }),
      [&](int64_t, int64_t, const Rows& r, const at::Tensor& g, const at::Tensor&) {
        total.index_add_(0, r.sample, g * per_row(weight_t.index_select(0, r.aux), g));
      },
      options_.internal_batch_size, /*granule=*/n);

  const at::Tensor global = total * diff;
  Attribution a;
  a.values = options_.multiply_by_inputs ? global : total;
  a.output = ends.output.slice(0, 0, n);
  a.output_change = (neuron.slice(0, 0, n) - neuron.slice(0, n, 2 * n)).to(global.dtype());
  a.convergence_delta = detail::sum_per_sample(global) - a.output_change;
  a.extra = {{"quadrature", options_.method}, {"n_steps", steps}, {"layer", layer},
             {"neuron_selector", options_.neuron_selector}, {"convergence_delta_of", "neuron"}};
  return a;
}

}  // namespace candela
