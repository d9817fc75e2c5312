#include "candela/methods/perturbation/feature_ablation.h"

#include <ATen/ATen.h>

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "candela/methods/gradient/common.h"
#include "candela/methods/perturbation/feature_mask.h"

namespace candela {

void FeatureAblation::Options::validate() const {
  CANDELA_CHECK(perturbations_per_eval >= 0, "perturbations_per_eval must be >= 0 (0 = automatic), got ",
                perturbations_per_eval, ".");
}

Attribution FeatureAblation::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const InputSpec& spec = ev.model().input_spec();
  const int64_t n = x.size(0);
  const auto lopts = x.options().dtype(at::kLong);
  const at::Tensor mask = (req.feature_mask.defined() ? expand_feature_mask(req.feature_mask, x, spec)
                                                      : make_feature_mask("each", x, spec))
                              .to(x.device());
  const int64_t groups = feature_count(mask);

  // The (group, sample) pairs that exist, group-major like Captum's loop.
  at::Tensor present = at::zeros({n, groups}, lopts).scatter_(1, mask.reshape({n, -1}), 1);
  const at::Tensor pairs = present.t().nonzero();
  const at::Tensor group_of = pairs.select(1, 0).cpu().contiguous(), sample_of = pairs.select(1, 1).cpu().contiguous();

  const at::Tensor base = req.baseline.for_inputs(x, spec.layout, 0);
  const at::Tensor out_x = detail::forward_all(ev, "feature_ablation: inputs", x);
  const Target target = req.target.resolve(out_x);
  const at::Tensor f0 = target.scores(out_x, at::arange(n, lopts)).to(at::kDouble);

  // Row r ablates group group_of[r] of sample sample_of[r]; the consumer keeps the drop per
  // (sample, group), and each element takes its group's drop at the end.
  at::Tensor drops = at::zeros({n, groups}, x.options().dtype(at::kDouble));
  const int64_t cap = options_.perturbations_per_eval == 0 ? 0 : options_.perturbations_per_eval * n;
  ev.forward(
      "feature_ablation", pairs.size(0),
      [&](int64_t b, int64_t e) {
        std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
        shape[0] = e - b;
        at::Tensor rows = at::empty(shape, x.options());
        const auto g = group_of.accessor<int64_t, 1>();
        const auto i = sample_of.accessor<int64_t, 1>();
        for (int64_t r = b; r < e; ++r) {
          at::Tensor dst = rows[r - b];
          at::where_out(dst, mask[i[r]].eq(g[r]), base[i[r]], x[i[r]]);
        }
        return Rows{rows, sample_of.slice(0, b, e), group_of.slice(0, b, e)};
      },
      [&](int64_t, int64_t, const Rows& rows, const at::Tensor& out) {
        at::Tensor drop = f0.index_select(0, rows.sample) - target.scores(out, rows.sample).to(at::kDouble);
        drops.index_put_({rows.sample, rows.aux}, drop);
      },
      cap, x);
  const at::Tensor total = drops.gather(1, mask.reshape({n, -1})).view(x.sizes()).to(out_x.scalar_type());

  Attribution a;
  a.values = total;
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.extra = {{"features", groups}};
  return a;
}

}  // namespace candela
