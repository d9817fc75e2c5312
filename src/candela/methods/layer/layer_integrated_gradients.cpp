#include "candela/methods/layer/layer_integrated_gradients.h"

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/taps.h"
#include "candela/methods/gradient/integrated_gradients.h"
#include "common.h"

namespace candela {
using detail::per_row;

void LayerIntegratedGradients::Options::validate() const {
  detail::check_one_layer(layers, "layer_integrated_gradients");
  check_path_options("layer_integrated_gradients", n_steps, method, internal_batch_size, 2);
}

Attribution LayerIntegratedGradients::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const char* stage = "layer_integrated_gradients";
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0), steps = options_.n_steps;
  const auto taps_ptr = LayerTaps::of(ev.model(), options_.layers);
  const LayerTaps& taps = *taps_ptr;
  const at::Tensor base = req.baseline.for_inputs(x, ev.model().input_spec().layout, 0);

  // f(x), f(baseline) (for top1 and the convergence delta) and the layer's output at both.
  auto ends = detail::tapped_forward(ev, taps, "layer_integrated_gradients: endpoints", at::cat({x, base}));
  const at::Tensor out_x = ends.output.slice(0, 0, n), out_b = ends.output.slice(0, n, 2 * n);
  const at::Tensor h_x = ends.activation.slice(0, 0, n), h_b = ends.activation.slice(0, n, 2 * n);
  const at::Tensor h_diff = h_x - h_b;
  const Target target = req.target.resolve(out_x);

  std::vector<double> alphas, weights;
  quadrature(options_.method, steps, alphas, weights);
  const auto opts = h_x.options();
  const at::Tensor alpha_t = at::tensor(alphas, at::kDouble).to(opts), weight_t = at::tensor(weights, at::kDouble).to(opts);
  at::Tensor total = at::zeros_like(h_x);
  auto accumulate = [&](const at::Tensor& sample, const at::Tensor& step, const at::Tensor& g) {
    total.index_add_(0, sample, g * per_row(weight_t.index_select(0, step), g));
  };
  const int64_t rows = n * steps, batch = detail::aligned_batch(ev, options_.internal_batch_size, n);

  bool suffix = taps.can_cut();
  std::string reason = suffix ? "" : taps.cut_problem();
  if (suffix) {
    // The network before the layer runs once on x; each batch of path points re-runs only what
    // follows it, with the values that cross the cut (skip connections) taken from x.
    std::shared_ptr<const LayerTaps::Prefix> prefix;
    ev.batched("layer_integrated_gradients: prefix", n, n, [&](int64_t, int64_t) {
      at::NoGradGuard no_grad;
      prefix = taps.run_prefix(x);
    }, /*evaluations=*/false);
    bool first = true;
    try {
      ev.batched(stage, rows, batch, [&](int64_t b, int64_t e) {
        auto p = detail::path_rows(h_b, h_diff, alpha_t, b, e);
        at::Tensor h = p.points.detach().requires_grad_(true);
        at::Tensor g;
        {
          at::AutoGradMode enable(true);
          at::Tensor out = taps.run_suffix(*prefix, h, p.sample);
          g = detail::grad_or_zeros(target.scores(out, p.sample), h);
        }
        accumulate(p.sample, p.step, g);
        first = false;
      }, /*evaluations=*/false);
    } catch (const ShapeMismatch& e) {
      // A value crossing the cut has no batch dimension: only full passes can serve this layer.
      if (!first) throw;
      suffix = false;
      reason = e.what();
    }
  }
  if (!suffix) {
    // Captum's way: full passes over x repeated per path point, the layer's output replaced.
    ev.gradients(
        stage, rows,
        [&](int64_t b, int64_t e) {
          auto p = detail::path_rows(h_b, h_diff, alpha_t, b, e);
          return Rows{p.points, p.sample, p.step};
        },
        Evaluator::Scorer([&](const at::Tensor& h, const Rows& r) {
          auto run = taps.forward(x.index_select(0, r.sample), {h});
          return std::make_pair(target.scores(run.output, r.sample), run.output);
        }),
        [&](int64_t, int64_t, const Rows& r, const at::Tensor& g, const at::Tensor&) { accumulate(r.sample, r.aux, g); },
        options_.internal_batch_size, /*granule=*/n);
  }

  const at::Tensor global = total * h_diff;
  const at::Tensor idx = at::arange(n, x.options().dtype(at::kLong));
  Attribution a;
  a.values = options_.multiply_by_inputs ? global : total;
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.layer = options_.layers[0];
  a.output_change = (target.scores(out_x, idx) - target.scores(out_b, idx)).to(global.dtype());
  a.convergence_delta = detail::sum_per_sample(global) - a.output_change;
  a.extra = {{"quadrature", options_.method}, {"n_steps", steps}, {"suffix_execution", suffix}};
  if (!suffix) a.extra["suffix_execution_reason"] = reason;
  return a;
}

}  // namespace candela
