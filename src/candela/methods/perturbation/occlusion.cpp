#include "candela/methods/perturbation/occlusion.h"

#include <ATen/ATen.h>

#include <cmath>

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "candela/methods/gradient/common.h"
#include "candela/methods/perturbation/feature_mask.h"

namespace candela {
using detail::shape_str;

void Occlusion::Options::validate() const {
  for (auto w : sliding_window_shapes)
    CANDELA_CHECK(w >= 1, "sliding_window_shapes must be positive, got ", w, ".");
  for (auto s : strides) CANDELA_CHECK(s >= 1, "strides must be positive, got ", s, ".");
  CANDELA_CHECK(perturbations_per_eval >= 0, "perturbations_per_eval must be >= 0 (0 = automatic), got ",
                perturbations_per_eval, ".");
}

Attribution Occlusion::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const InputSpec& spec = ev.model().input_spec();
  const int64_t n = x.size(0), d = x.dim() - 1;
  CANDELA_CHECK(d >= 1, "occlusion needs inputs [N, ...] with at least one dimension per sample, got ",
                shape_str(x.sizes()), ".");
  const std::vector<int64_t> size(x.sizes().begin() + 1, x.sizes().end());

  // Window and strides, with the defaults the header describes.
  std::vector<int64_t> window = options_.sliding_window_shapes, stride = options_.strides;
  if (window.empty()) {
    bool image = false;
    ImageAxes ax;
    try {
      ax = image_axes(x, spec);
      image = true;
    } catch (const InvalidArgument&) {
    }
    if (image) {
      const int64_t h = x.size(ax.h), w = x.size(ax.w);
      const int64_t side = std::max<int64_t>(1, std::llround(std::min(h, w) / 15.0));
      window = size;
      window[ax.h - 1] = window[ax.w - 1] = side;
      if (stride.empty()) {
        stride = size;  // a dimension the window covers whole has one position, whatever its stride
        stride[ax.h - 1] = stride[ax.w - 1] = (side + 1) / 2;
      }
    } else {
      window.assign(d, 1);
    }
  }
  if (stride.empty()) stride.assign(d, 1);
  if (stride.size() == 1) stride.assign(d, stride[0]);
  CANDELA_CHECK(static_cast<int64_t>(window.size()) == d, "sliding_window_shapes has ", window.size(),
                " values but each input has ", d, " dimensions ", shape_str(size),
                "; give one window size per dimension (the whole size for a dimension not to slide over).");
  CANDELA_CHECK(static_cast<int64_t>(stride.size()) == d, "strides has ", stride.size(), " values but each input has ",
                d, " dimensions ", shape_str(size), "; give one per dimension, or a single value for all.");
  std::vector<int64_t> counts(d);
  int64_t windows = 1;
  for (int64_t j = 0; j < d; ++j) {
    CANDELA_CHECK(window[j] <= size[j], "sliding window ", shape_str(window), " exceeds the input's per-sample shape ",
                  shape_str(size), " in dimension ", j, "; use a window at most ", size[j], " there.");
    CANDELA_CHECK(window[j] == size[j] || stride[j] <= window[j], "stride ", stride[j], " is larger than the window (",
                  window[j], ") in dimension ", j, ", which would leave elements unoccluded; use a stride <= ",
                  window[j], ".");
    counts[j] = (size[j] - window[j] + stride[j] - 1) / stride[j] + 1;
    windows *= counts[j];
  }

  const auto opts = x.options();
  const auto lopts = opts.dtype(at::kLong);
  const at::Tensor base = req.baseline.for_inputs(x, spec.layout, 0);
  const at::Tensor out_x = detail::forward_all(ev, "occlusion: inputs", x);
  const Target target = req.target.resolve(out_x);
  const at::Tensor f0 = target.scores(out_x, at::arange(n, lopts)).to(at::kDouble);

  // Row r: window r / n (Captum's numbering: dimension 0 varies fastest) on sample r % n.
  // Each row copies its sample and pastes the baseline into the window's box; the
  // consumer only keeps the drop per (sample, window).
  at::Tensor drops = at::zeros({n, windows}, opts.dtype(at::kDouble));
  auto box_start = [&](int64_t k, int64_t j) {
    for (int64_t q = 0; q < j; ++q) k /= counts[q];
    return (k % counts[j]) * stride[j];
  };
  const int64_t cap = options_.perturbations_per_eval == 0 ? 0 : options_.perturbations_per_eval * n;
  ev.forward(
      "occlusion", windows * n,
      [&](int64_t b, int64_t e) {
        std::vector<int64_t> full(size);
        full.insert(full.begin(), e - b);
        at::Tensor rows = at::empty(full, opts);
        for (int64_t r = b; r < e; ++r) {
          const int64_t k = r / n, i = r % n;
          at::Tensor dst = rows[r - b], src = base[i];
          dst.copy_(x[i]);
          for (int64_t j = 0; j < d; ++j) {
            const int64_t start = box_start(k, j), len = std::min(window[j], size[j] - start);
            dst = dst.narrow(j, start, len);
            src = src.narrow(j, start, len);
          }
          dst.copy_(src);
        }
        at::Tensor r = at::arange(b, e, lopts);
        return Rows{rows, r.remainder(n), r.div(n, "floor")};
      },
      [&](int64_t, int64_t, const Rows& rows, const at::Tensor& out) {
        at::Tensor drop = f0.index_select(0, rows.sample) - target.scores(out, rows.sample).to(at::kDouble);
        drops.index_put_({rows.sample, rows.aux}, drop);
      },
      cap, x);

  // Spread the drops back over the elements and average: the windows' boxes are products of
  // one interval per dimension, so both sums are mode products with the 0/1 matrices
  // cover_j [windows along j, size j].
  // Window k = c_0 + counts_0 (c_1 + counts_1 (c_2 + ...)): row-major over reversed counts.
  std::vector<int64_t> reversed(counts.rbegin(), counts.rend()), order(d + 1, 0);
  reversed.insert(reversed.begin(), n);
  for (int64_t j = 0; j < d; ++j) order[j + 1] = d - j;
  at::Tensor total = drops.view(reversed).permute(order);
  at::Tensor weight = at::ones({1}, opts.dtype(at::kDouble));
  for (int64_t j = 0; j < d; ++j) {
    at::Tensor pos = at::arange(size[j], lopts).unsqueeze(0);
    at::Tensor starts = (at::arange(counts[j], lopts) * stride[j]).unsqueeze(1);
    at::Tensor cover = pos.ge(starts).logical_and(pos.lt(starts + window[j])).to(at::kDouble);
    total = at::tensordot(total, cover, {1}, {0});  // the new axis goes last: after d steps, [n, size...]
    std::vector<int64_t> s(d, 1);
    s[j] = size[j];
    weight = weight * cover.sum(0).view(s);
  }
  total = (total / weight.unsqueeze(0)).to(out_x.scalar_type());

  Attribution a;
  a.values = total;
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.extra = {{"sliding_window_shapes", window}, {"strides", stride}, {"windows", windows}};
  return a;
}

}  // namespace candela
