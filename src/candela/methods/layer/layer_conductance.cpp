#include "candela/methods/layer/layer_conductance.h"

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/taps.h"
#include "candela/methods/gradient/common.h"
#include "candela/methods/gradient/integrated_gradients.h"
#include "common.h"

namespace candela {

void LayerConductance::Options::validate() const {
  detail::check_one_layer(layers, "layer_conductance");
  // n_steps + 1 nodes: a riemann rule needs two, which one step already gives.
  check_path_options("layer_conductance", n_steps, method, internal_batch_size, 1);
}

Attribution LayerConductance::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0), points = options_.n_steps + 1;
  const auto taps_ptr = LayerTaps::of(ev.model(), options_.layers);
  const LayerTaps& taps = *taps_ptr;
  const at::Tensor base = req.baseline.for_inputs(x, ev.model().input_spec().layout, 0);
  const at::Tensor diff = x - base;

  const at::Tensor ends = detail::forward_all(ev, "layer_conductance: endpoints", at::cat({x, base}));
  const at::Tensor out_x = ends.slice(0, 0, n), out_b = ends.slice(0, n, 2 * n);
  const Target target = req.target.resolve(out_x);

  // Captum's nodes: the quadrature's n_steps + 1 points (its weights are not used).
  std::vector<double> alphas, unused;
  quadrature(options_.method, points, alphas, unused);
  const at::Tensor alpha_t = at::tensor(alphas, at::kDouble).to(x.options());

  // Rows are step-major, so step k of a sample always arrives after its step k - 1, in this
  // batch or an earlier one. Each sample keeps the layer's output and gradient at its latest
  // step; step k adds grad_{k-1} * (h_k - h_{k-1}) (Captum uses the gradient at the left end).
  at::Tensor total, prev_grad, prev_act;
  ev.batched("layer_conductance", n * points, Evaluator::Automatic{true, options_.internal_batch_size, n},
             [&](int64_t b, int64_t e) {
               auto p = detail::path_rows(base, diff, alpha_t, b, e);
               at::Tensor h, g;
               {
                 at::AutoGradMode enable(true);
                 // The input requires grad so that the layer is in the graph even when no parameter precedes it.
                 auto run = taps.forward(p.points.detach().requires_grad_(true));
                 h = run.activations[0];
                 g = detail::grad_or_zeros(target.scores(run.output, p.sample), h);
               }
               h = h.detach();
               if (!total.defined()) {
                 std::vector<int64_t> shape(h.sizes().begin(), h.sizes().end());
                 shape[0] = n;
                 total = at::zeros(shape, h.options());
                 prev_grad = at::zeros(shape, h.options());
                 prev_act = at::zeros(shape, h.options());
               }
               for (int64_t r = b; r < e;) {
                 const int64_t step = r / n, stop = std::min(e, (step + 1) * n);
                 const int64_t s0 = r % n, s1 = s0 + (stop - r);
                 at::Tensor h_k = h.slice(0, r - b, stop - b), g_k = g.slice(0, r - b, stop - b);
                 if (step > 0) total.slice(0, s0, s1).add_(prev_grad.slice(0, s0, s1) * (h_k - prev_act.slice(0, s0, s1)));
                 prev_grad.slice(0, s0, s1).copy_(g_k);
                 prev_act.slice(0, s0, s1).copy_(h_k);
                 r = stop;
               }
             });

  const at::Tensor idx = at::arange(n, x.options().dtype(at::kLong));
  Attribution a;
  a.values = total;
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.layer = options_.layers[0];
  a.output_change = (target.scores(out_x, idx) - target.scores(out_b, idx)).to(total.dtype());
  a.convergence_delta = detail::sum_per_sample(total) - a.output_change;
  a.extra = {{"quadrature", options_.method}, {"n_steps", options_.n_steps}};
  return a;
}

}  // namespace candela
