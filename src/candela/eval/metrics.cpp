// The metric registry, and what metrics and evaluation runs share: predicted classes, class
// targets, similarities between maps, the per-pixel feature map. The metrics themselves are in
// one file per family (faithfulness.cpp, robustness.cpp, localisation.cpp, randomisation.cpp,
// complexity.cpp).
#include "metric_common.h"

namespace candela {
using detail::str_cat;
using metric_common::image_input;
using metric_common::kDouble;

// ---- shared helpers ------------------------------------------------------------------------

namespace detail {

at::Tensor predict_rows(const Model& model, const EvalOptions& eval, int64_t total,
                        const std::function<at::Tensor(int64_t, int64_t)>& make, const char* stage) {
  Evaluator ev(model, eval);
  at::Tensor out = at::empty({total}, at::TensorOptions().dtype(at::kLong));
  ev.forward(
      stage, total,
      [&](int64_t b, int64_t e) { return Rows{make(b, e), at::arange(b, e, at::TensorOptions().dtype(at::kLong)), {}}; },
      [&](int64_t b, int64_t e, const Rows&, const at::Tensor& o) {
        out.slice(0, b, e).copy_(o.reshape({o.size(0), -1}).argmax(1).to(at::kCPU));
      });
  return out;
}

Target class_target(const at::Tensor& classes) {
  const at::Tensor c = classes.to(at::kCPU, at::kLong).contiguous();
  return Target::indices(std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()));
}

}  // namespace detail

// ---- similarities and maps ---------------------------------------------------------------

at::Tensor pearson_rows(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble) - a.to(at::kDouble).mean(1, true);
  const at::Tensor y = b.to(at::kDouble) - b.to(at::kDouble).mean(1, true);
  return (x * y).sum(1) / (x.norm(2, 1) * y.norm(2, 1));
}

namespace {
// Average ranks (ties share their mean rank), as scipy.stats.rankdata.
at::Tensor ranks(const at::Tensor& a) {
  const at::Tensor v = a.to(at::kDouble).contiguous();
  at::Tensor out = at::empty_like(v);
  const int64_t n = v.size(0), p = v.size(1);
  for (int64_t i = 0; i < n; ++i) {
    const double* row = v[i].data_ptr<double>();
    std::vector<int64_t> idx(p);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t l, int64_t r) { return row[l] < row[r]; });
    auto o = out[i];
    double* op = o.data_ptr<double>();
    for (int64_t s = 0; s < p;) {
      int64_t e = s;
      while (e + 1 < p && row[idx[e + 1]] == row[idx[s]]) ++e;
      const double r = (s + e) / 2.0 + 1.0;
      for (int64_t k = s; k <= e; ++k) op[idx[k]] = r;
      s = e + 1;
    }
  }
  return out;
}
}  // namespace

at::Tensor spearman_rows(const at::Tensor& a, const at::Tensor& b) { return pearson_rows(ranks(a), ranks(b)); }

at::Tensor top_fraction_iou_rows(const at::Tensor& a, const at::Tensor& b, double fraction) {
  CANDELA_CHECK(fraction > 0 && fraction <= 1, "the top fraction must be in (0, 1], got ", fraction, ".");
  CANDELA_CHECK_T(ShapeMismatch, a.dim() == 2 && a.sizes() == b.sizes(), "top_fraction_iou_rows needs two maps [N, F] of "
                  "one shape, got ", detail::shape_str(a.sizes()), " and ", detail::shape_str(b.sizes()), ".");
  const int64_t n = a.size(0), p = a.size(1);
  const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::llround(fraction * static_cast<double>(p))));
  at::Tensor out = at::zeros({n}, kDouble);
  if (p == 0) return out;
  // Stable descending order of |value|: equal values keep their positions' order.
  const auto top = [&](const at::Tensor& m) {
    const at::Tensor order = std::get<1>(m.abs().to(at::kDouble).sort(/*stable=*/true, 1, /*descending=*/true));
    return at::zeros({n, p}, at::kBool).scatter_(1, order.slice(1, 0, k), true);
  };
  const at::Tensor ta = top(a), tb = top(b);
  return (ta & tb).sum(1).to(kDouble) / (ta | tb).sum(1).to(kDouble);
}

at::Tensor ssim_rows(const at::Tensor& a, const at::Tensor& b) {
  // skimage.metrics.structural_similarity on 1-d rows: 7-wide uniform window, sample
  // covariance, K1 = 0.01, K2 = 0.03, data range of both rows, mean over the interior.
  const at::Tensor x = a.to(at::kDouble).contiguous(), y = b.to(at::kDouble).contiguous();
  const int64_t n = x.size(0), p = x.size(1), win = 7, pad = 3;
  CANDELA_CHECK(p >= win, "ssim needs at least ", win, " features, got ", p, ".");
  at::Tensor out = at::empty({n}, kDouble);
  const double cov_norm = win / (win - 1.0);
  for (int64_t i = 0; i < n; ++i) {
    const double* xp = x[i].data_ptr<double>();
    const double* yp = y[i].data_ptr<double>();
    const double hi = std::max(*std::max_element(xp, xp + p), *std::max_element(yp, yp + p));
    const double lo = std::min(*std::min_element(xp, xp + p), *std::min_element(yp, yp + p));
    const double range = std::abs(hi - lo);
    const double c1 = std::pow(0.01 * range, 2), c2 = std::pow(0.03 * range, 2);
    double total = 0;
    int64_t count = 0;
    for (int64_t c = pad; c < p - pad; ++c) {
      double ux = 0, uy = 0, uxx = 0, uyy = 0, uxy = 0;
      for (int64_t k = c - pad; k <= c + pad; ++k) {
        ux += xp[k], uy += yp[k], uxx += xp[k] * xp[k], uyy += yp[k] * yp[k], uxy += xp[k] * yp[k];
      }
      ux /= win, uy /= win, uxx /= win, uyy /= win, uxy /= win;
      const double vx = cov_norm * (uxx - ux * ux), vy = cov_norm * (uyy - uy * uy), vxy = cov_norm * (uxy - ux * uy);
      total += ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
      ++count;
    }
    out[i] = total / static_cast<double>(count);
  }
  return out;
}

FeatureMap feature_map(const at::Tensor& attributions, const at::Tensor& inputs, const InputSpec& spec) {
  FeatureMap fm;
  const int64_t n = inputs.size(0);
  CANDELA_CHECK_T(ShapeMismatch, attributions.defined() && attributions.size(0) == n,
                  "the attributions have ", attributions.defined() ? attributions.size(0) : 0, " rows for ", n,
                  " inputs.");
  at::Tensor a = attributions.to(at::kCPU, at::kDouble);
  if (image_input(inputs, spec)) {
    fm.image = true;
    const bool nchw = spec.layout == "NCHW";
    fm.height = nchw ? inputs.size(2) : inputs.size(1);
    fm.width = nchw ? inputs.size(3) : inputs.size(2);
    fm.channels = nchw ? inputs.size(1) : inputs.size(3);
    if (a.dim() == 4) a = nchw ? a.sum(1) : a.sum(3);
    else if (a.dim() == 3) a = a;  // already [N, H, W]
    CANDELA_CHECK_T(ShapeMismatch, a.dim() == 3 && a.size(1) == fm.height && a.size(2) == fm.width,
                    "the attributions have shape ", detail::shape_str(attributions.sizes()),
                    " but the images are ", fm.height, "x", fm.width, "; upsample maps to the input size.");
    fm.values = a.reshape({n, -1}).contiguous();
    return fm;
  }
  // Token ids [N, L] explained at their embedding [N, L, D] (layer methods, AttnLRP): one value per
  // token, the signed sum over the embedding (Captum's convention; `explain` does the same).
  if (spec.layout == "NL" && inputs.dim() == 2 && a.dim() == 3 && a.size(1) == inputs.size(1)) a = a.sum(2);
  CANDELA_CHECK_T(ShapeMismatch, a.numel() == inputs.numel(), "the attributions have shape ",
                  detail::shape_str(attributions.sizes()), " but the inputs ", detail::shape_str(inputs.sizes()), ".");
  fm.values = a.reshape({n, -1}).contiguous();
  return fm;
}

// ---- registry --------------------------------------------------------------------------

nlohmann::json MetricRegistry::to_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& m : metrics())
    out.push_back({{"name", m.name}, {"family", m.family}, {"description", m.description},
                   {"reference", m.reference}, {"options", m.schema}, {"needs_masks", m.needs_masks},
                   {"needs_explainer", m.needs_explainer},
                   {"higher_is_better", m.create(nlohmann::json::object())->higher_is_better()}});
  return out;
}

const MetricRegistry& MetricRegistry::builtin() {
  static const MetricRegistry registry = [] {
    MetricRegistry r;
    register_faithfulness_metrics(r);
    register_robustness_metrics(r);
    register_localisation_metrics(r);
    register_randomisation_metrics(r);
    register_complexity_metrics(r);
    return r;
  }();
  return registry;
}

}  // namespace candela
