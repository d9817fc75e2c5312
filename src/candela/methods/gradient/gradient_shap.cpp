#include "candela/methods/gradient/gradient_shap.h"

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "common.h"

namespace candela {
using detail::per_row;

void GradientShapOptions::validate() const {
  CANDELA_CHECK(n_samples >= 1 && n_samples <= 1000000, "n_samples must be in [1, 1000000], got ", n_samples, ".");
  CANDELA_CHECK(stdevs >= 0 && std::isfinite(stdevs), "stdevs must be a finite number >= 0, got ", stdevs, ".");
  CANDELA_CHECK(internal_batch_size >= 0, "internal_batch_size must be >= 0 (0 = automatic).");
  CANDELA_CHECK(seed >= 0, "seed must be >= 0.");
}

Attribution GradientShap::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const std::string stage = name();
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0), draws = options_.n_samples;
  const auto opts = x.options();
  const at::Tensor out_x = detail::forward_all(ev, (stage + ": target").c_str(), x);
  const Target target = req.target.resolve(out_x);

  // A distribution is sampled; any other baseline gives each input its own reference.
  const bool from_distribution = req.baseline.is_distribution();
  const at::Tensor refs = req.baseline.samples(x, ev.model().input_spec().layout, options_.seed);

  // Draw s (its reference, path point and noise) depends on (seed, s) only, so a sample
  // gets the same numbers alone or in a batch.
  std::vector<int64_t> pick(draws, 0);
  std::vector<double> alpha(draws);
  auto draw_gen = [&](int64_t s) { return detail::seeded_generator(options_.seed, s); };
  for (int64_t s = 0; s < draws; ++s) {
    auto gen = draw_gen(s);
    alpha[s] = at::rand({1}, gen, at::TensorOptions().dtype(at::kDouble)).item<double>();
    if (from_distribution)
      pick[s] = at::randint(refs.size(0), {1}, gen, at::TensorOptions().dtype(at::kLong)).item<int64_t>();
  }
  const at::Tensor alpha_t = at::tensor(alpha, at::kDouble).to(opts);
  const at::Tensor pick_t = at::tensor(pick, at::kLong).to(opts.device());

  at::Tensor total = at::zeros_like(x);
  ev.gradients(
      stage.c_str(), n * draws,
      [&](int64_t b, int64_t e) {
        at::Tensor r = at::arange(b, e, opts.dtype(at::kLong));
        at::Tensor sample = r.div(draws, "floor"), s = r.remainder(draws);
        at::Tensor xi = x.index_select(0, sample);
        if (options_.stdevs > 0) {
          std::vector<at::Tensor> noise;
          for (int64_t row = b; row < e; ++row) {
            auto gen = draw_gen(row % draws);
            at::rand({1}, gen);  // skip the path point's draw
            if (from_distribution) at::randint(refs.size(0), {1}, gen, at::TensorOptions().dtype(at::kLong));
            noise.push_back(at::normal(0.0, options_.stdevs, x.sizes().slice(1), gen, opts.device(at::kCPU)));
          }
          xi = xi + at::stack(noise).to(opts.device());
        }
        at::Tensor ref = from_distribution ? refs.index_select(0, pick_t.index_select(0, s)) : refs.index_select(0, sample);
        at::Tensor d = xi - ref;
        return Rows{ref + per_row(alpha_t.index_select(0, s), x) * d, sample, d};
      },
      target,
      [&](int64_t, int64_t, const Rows& rows, const at::Tensor& g, const at::Tensor&) {
        total.index_add_(0, rows.sample, options_.multiply_by_inputs ? g * rows.aux : g);
      },
      options_.internal_batch_size);

  Attribution a;
  a.values = total / static_cast<double>(draws);
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.extra = {{"n_samples", draws}, {"baseline_distribution", from_distribution}};
  return a;
}

}  // namespace candela
