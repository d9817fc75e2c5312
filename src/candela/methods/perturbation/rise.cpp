#include "candela/methods/perturbation/rise.h"

#include <ATen/ATen.h>

#include <cmath>

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "candela/methods/gradient/common.h"
#include "candela/methods/perturbation/feature_mask.h"

namespace candela {

void Rise::Options::validate() const {
  CANDELA_CHECK(n_masks >= 1 && n_masks <= 10000000, "n_masks must be in [1, 10000000], got ", n_masks, ".");
  CANDELA_CHECK(grid_size >= 1 && grid_size <= 4096, "grid_size must be in [1, 4096], got ", grid_size, ".");
  CANDELA_CHECK(p1 > 0 && p1 <= 1, "p1 (the probability of keeping a cell) must be in (0, 1], got ", p1, ".");
}

// Bilinear upsampling (half-pixel centres, clamped edges: torch's align_corners = false) of
// a length-s signal to length u, as a matrix [u, s]; a 2-d upsampling is A_h G A_w^T.
static at::Tensor upsampling_matrix(int64_t s, int64_t u) {
  at::Tensor eye = at::eye(s, at::TensorOptions().dtype(at::kFloat)).view({s, 1, s});
  return at::upsample_linear1d(eye, {u}, /*align_corners=*/false).squeeze(1).t().contiguous();
}

at::Tensor Rise::masks(int64_t first, int64_t count, int64_t height, int64_t width) const {
  const int64_t s = options_.grid_size, cell_h = (height + s - 1) / s, cell_w = (width + s - 1) / s;
  const at::Tensor up_h = upsampling_matrix(s, (s + 1) * cell_h), up_w = upsampling_matrix(s, (s + 1) * cell_w);
  const auto dopts = at::TensorOptions().dtype(at::kDouble);
  std::vector<at::Tensor> grids, rows, cols;
  for (int64_t i = 0; i < count; ++i) {
    // One draw per mask: s * s cells, then the shift (rows, columns) of the crop.
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(options_.seed), static_cast<uint64_t>(first + i));
    at::Tensor u = at::rand({s * s + 2}, gen, dopts);
    grids.push_back(u.slice(0, 0, s * s).lt(options_.p1).to(at::kFloat).view({s, s}));
    const auto a = u.accessor<double, 1>();
    const int64_t dy = std::min<int64_t>(static_cast<int64_t>(a[s * s] * cell_h), cell_h - 1);
    const int64_t dx = std::min<int64_t>(static_cast<int64_t>(a[s * s + 1] * cell_w), cell_w - 1);
    rows.push_back(up_h.narrow(0, dy, height));
    cols.push_back(up_w.narrow(0, dx, width));
  }
  // Upsample and crop in one go: (A_h[dy:dy+H] G) A_w[dx:dx+W]^T per mask.
  at::Tensor m = at::bmm(at::bmm(at::stack(rows), at::stack(grids)), at::stack(cols).transpose(1, 2));
  return m.clamp_(0, 1);  // the interpolation weights sum to 1 only up to rounding
}

Attribution Rise::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const InputSpec& spec = ev.model().input_spec();
  const ImageAxes ax = image_axes(x, spec);
  const int64_t n = x.size(0), h = x.size(ax.h), w = x.size(ax.w), count = options_.n_masks;
  const auto lopts = x.options().dtype(at::kLong);
  const at::Tensor base = req.baseline.for_inputs(x, spec.layout, static_cast<uint64_t>(options_.seed));
  const at::Tensor diff = x - base;
  const at::Tensor out_x = detail::forward_all(ev, "rise: inputs", x);
  const Target target = req.target.resolve(out_x);

  // Per sample and pixel, sums over the masks of f M and (f M)^2, in double.
  at::Tensor sum = at::zeros({n, h * w}, x.options().dtype(at::kDouble)), sum_sq = at::zeros_like(sum);
  // Row r: mask r / n on sample r % n; a batch makes only the masks it needs.
  ev.forward(
      "rise", count * n,
      [&](int64_t b, int64_t e) {
        const int64_t first = b / n, last = (e - 1) / n;
        at::Tensor m = masks(first, last - first + 1, h, w).to(x.device(), x.scalar_type());
        at::Tensor r = at::arange(b, e, lopts);
        at::Tensor sample = r.remainder(n), row_mask = m.index_select(0, r.div(n, "floor") - first);
        if (ax.c >= 0) row_mask = row_mask.unsqueeze(ax.c);
        std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
        shape[0] = e - b;
        // One sample: broadcast it instead of copying it per row.
        const at::Tensor xb = n == 1 ? base.expand(shape) : base.index_select(0, sample);
        const at::Tensor db = n == 1 ? diff.expand(shape) : diff.index_select(0, sample);
        return Rows{at::addcmul(xb, row_mask, db), sample, m};
      },
      [&](int64_t b, int64_t e, const Rows& rows, const at::Tensor& out) {
        // weights[i, k] = f of sample i under mask k of this batch (each pair occurs once).
        const int64_t first = b / n, k = rows.aux.size(0);
        at::Tensor f = target.scores(out, rows.sample).to(at::kFloat);
        at::Tensor weights = at::zeros({n, k}, f.options());
        weights.index_put_({rows.sample, at::arange(b, e, lopts).div(n, "floor") - first}, f);
        at::Tensor m = rows.aux.reshape({k, h * w}).to(at::kFloat);
        sum += at::matmul(weights, m).to(at::kDouble);
        sum_sq += at::matmul(weights * weights, m * m).to(at::kDouble);
      });

  const double p1 = options_.p1;
  const at::Tensor saliency = (sum / (static_cast<double>(count) * p1)).view({n, h, w});
  Attribution a;
  a.values = expand_spatial(saliency.to(x.scalar_type()), x, spec);
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.extra = {{"grid_size", options_.grid_size}, {"n_masks", count}};
  if (count > 1) {
    // Y_i = f_i M_i / p1 has mean S; the standard error of S is sd(Y) / sqrt(N).
    at::Tensor mean_sq = (sum_sq / (static_cast<double>(count) * p1 * p1)).view({n, h, w});
    at::Tensor var = (mean_sq - saliency * saliency).clamp_min(0) * (static_cast<double>(count) / (count - 1));
    at::Tensor se = (var / static_cast<double>(count)).sqrt();
    const double mean_se = se.mean().item<double>();
    a.extra["standard_error"] = {{"mean", mean_se},
                                 {"max", se.max().item<double>()},
                                 {"relative", mean_se / std::max(saliency.abs().mean().item<double>(), 1e-300)}};
  }
  return a;
}

}  // namespace candela
