#include "candela/methods/perturbation/lime.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "candela/methods/perturbation/feature_mask.h"

namespace candela {
namespace {

using detail::str_cat;
const auto kD = at::TensorOptions().dtype(at::kDouble);
const auto kL = at::TensorOptions().dtype(at::kLong);

// ---- weighted least squares on centred data ------------------------------------------------
// Everything a fit needs, computed once: weighted means, the weighted Gram matrix of the
// centred z and its product with the centred y (sklearn centres with the weighted means when
// fit_intercept and sample weights are given, then solves on sqrt(w)-scaled rows).
struct Normal {
  at::Tensor z, y, w;    // [S, d], [S], [S] double
  at::Tensor zmean;      // [d]
  double ymean = 0, sw = 0, yy = 0;  // yy = sum w (y - ymean)^2
  at::Tensor gram, rhs;  // [d, d], [d]
};

Normal normal_equations(const at::Tensor& z, const at::Tensor& y, const at::Tensor& w) {
  Normal n;
  n.z = z.to(at::kDouble).cpu().contiguous();
  n.y = y.to(at::kDouble).cpu().contiguous();
  n.w = w.to(at::kDouble).cpu().contiguous();
  n.sw = n.w.sum().item<double>();
  CANDELA_CHECK(n.sw > 0, "lime: every sample has zero kernel weight; increase kernel_width.");
  n.zmean = at::matmul(n.w, n.z) / n.sw;
  n.ymean = at::dot(n.w, n.y).item<double>() / n.sw;
  at::Tensor zc = n.z - n.zmean, yc = n.y - n.ymean;
  at::Tensor zw = zc * n.w.unsqueeze(1);
  n.gram = at::matmul(zw.t(), zc);
  n.rhs = at::matmul(zw.t(), yc);
  n.yy = at::dot(n.w, yc * yc).item<double>();
  return n;
}

// Solves the symmetric system A b = r; a singular A (alpha = 0 with collinear columns) gets
// the minimum-norm solution, as a least-squares solver would give.
at::Tensor solve(const at::Tensor& a, const at::Tensor& r) {
  try {
    at::Tensor b = at::linalg_solve(a, r);
    if (at::isfinite(b).all().item<bool>()) return b;
  } catch (const c10::Error&) {
  }
  return at::matmul(at::linalg_pinv(a, 1e-12, /*hermitian=*/true), r);
}

at::Tensor index(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }

at::Tensor sub_gram(const Normal& n, const at::Tensor& cols) {
  return n.gram.index_select(0, cols).index_select(1, cols);
}

at::Tensor ridge_coef(const Normal& n, const at::Tensor& cols, double alpha) {
  const int64_t k = cols.numel();
  return solve(sub_gram(n, cols) + alpha * at::eye(k, kD), n.rhs.index_select(0, cols));
}

// Weighted R^2 of the fit b on `cols` from the normal equations (sklearn's r2_score with
// sample weights: 1 - SSR / SST, 1 when both are 0 and 0 when only SST is).
double r2_from_gram(const Normal& n, const at::Tensor& cols, const at::Tensor& b) {
  const at::Tensor r = n.rhs.index_select(0, cols);
  const double ssr = n.yy - 2 * at::dot(b, r).item<double>() + at::dot(b, at::matmul(sub_gram(n, cols), b)).item<double>();
  if (n.yy <= 0) return std::abs(ssr) <= 0 ? 1.0 : 0.0;
  return 1.0 - ssr / n.yy;
}

// sklearn's Lasso objective on the centred data, 1/(2 sw) sum w r^2 + alpha |b|_1, by cyclic
// coordinate descent on the Gram matrix.
at::Tensor lasso_coef(const Normal& n, const at::Tensor& cols, double alpha) {
  const int64_t k = cols.numel();
  const at::Tensor g_t = sub_gram(n, cols).contiguous(), r_t = n.rhs.index_select(0, cols).contiguous();
  const double* g = g_t.data_ptr<double>();
  const double* r = r_t.data_ptr<double>();
  std::vector<double> b(k, 0.0), gb(k, 0.0);  // gb = G b
  const double threshold = alpha * n.sw;
  for (int iter = 0; iter < 100000; ++iter) {
    double max_change = 0, max_b = 0;
    for (int64_t j = 0; j < k; ++j) {
      const double gjj = g[j * k + j];
      const double old = b[j];
      double nb = 0;
      if (gjj > 0) {
        const double rho = r[j] - (gb[j] - gjj * old);
        nb = rho > threshold ? (rho - threshold) / gjj : rho < -threshold ? (rho + threshold) / gjj : 0.0;
      }
      if (nb != old) {
        for (int64_t m = 0; m < k; ++m) gb[m] += g[m * k + j] * (nb - old);
        b[j] = nb;
      }
      max_change = std::max(max_change, std::abs(nb - old));
      max_b = std::max(max_b, std::abs(nb));
    }
    if (max_change <= 1e-12 * std::max(max_b, 1e-300) || max_b == 0) break;
  }
  return at::tensor(b, at::kDouble);
}

// lime_base.LimeBase.forward_selection: greedily add the feature whose unregularised
// least-squares fit (with the features chosen so far) has the best weighted R^2.
std::vector<int64_t> forward_selection(const Normal& n, int64_t num_features) {
  const int64_t d = n.gram.size(0);
  std::vector<int64_t> used;
  for (int64_t step = 0; step < std::min(num_features, d); ++step) {
    double best_score = -100000000.0;
    int64_t best = 0;
    for (int64_t f = 0; f < d; ++f) {
      if (std::find(used.begin(), used.end(), f) != used.end()) continue;
      std::vector<int64_t> cols = used;
      cols.push_back(f);
      const at::Tensor c = index(cols);
      const double s = r2_from_gram(n, c, ridge_coef(n, c, 0.0));
      if (s > best_score) best_score = s, best = f;
    }
    used.push_back(best);
  }
  return used;
}

// lime_base's "highest_weights": Ridge(alpha=0.01) on every feature, keep the largest
// |coef_j * z_1j| (a stable sort, as Python's sorted).
std::vector<int64_t> highest_weights(const Normal& n, int64_t num_features) {
  const int64_t d = n.gram.size(0);
  std::vector<int64_t> all(d);
  std::iota(all.begin(), all.end(), 0);
  const at::Tensor coef = ridge_coef(n, index(all), 0.01);
  const at::Tensor weighted = (coef * n.z[0]).abs();
  std::vector<double> v(weighted.data_ptr<double>(), weighted.data_ptr<double>() + d);
  std::stable_sort(all.begin(), all.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  all.resize(std::min(num_features, d));
  return all;
}

at::Tensor forward_all(Evaluator& ev, const char* stage, const at::Tensor& x) {
  std::vector<at::Tensor> outs;
  ev.forward(stage, x.size(0),
             [&](int64_t b, int64_t e) { return Rows{x.slice(0, b, e), at::arange(b, e, kL), {}}; },
             [&](int64_t, int64_t, const Rows&, const at::Tensor& out) { outs.push_back(out.detach()); });
  return at::cat(outs);
}

// sqrt(exp(-d^2 / width^2)), lime's default kernel.
at::Tensor kernel(const at::Tensor& d, double width) { return at::sqrt(at::exp(-(d * d) / (width * width))); }

// Cosine distance of binary rows z [S, G] to the all-ones row (sklearn: a zero row has
// similarity 0, so distance 1).
at::Tensor cosine_to_ones(const at::Tensor& z) {
  const int64_t g = z.size(1);
  return 1.0 - at::sqrt(z.sum(1) / static_cast<double>(g));
}

// A standard normal truncated to [a, b] by inversion; the upper tail is mirrored to the
// lower one, where the normal CDF keeps its precision.
at::Tensor truncated_normal(const at::Tensor& a, const at::Tensor& b, const at::Tensor& u) {
  const at::Tensor flip = a > 0;
  const at::Tensor lo = at::where(flip, -b, a), hi = at::where(flip, -a, b);
  const at::Tensor plo = at::special_ndtr(lo), phi = at::special_ndtr(hi);
  at::Tensor z = at::special_ndtri(plo + u * (phi - plo));
  z = at::where(flip, -z, z);
  return at::minimum(at::maximum(z, a), b);
}

std::string fmt2(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// ---- tabular: lime_tabular.LimeTabularExplainer ---------------------------------------------
struct Discretized {
  std::vector<double> qts;                       // unique bin borders
  std::vector<double> means, stds, mins, maxs;   // per bin
  std::vector<int64_t> values;                   // bins present in the training data, sorted
  at::Tensor freqs;                              // their frequencies
  int64_t bin(double x) const {                  // np.searchsorted(qts, x) (side='left')
    return std::lower_bound(qts.begin(), qts.end(), x) - qts.begin();
  }
};

struct TabularStats {
  at::Tensor mean, scale;           // [d] StandardScaler(with_mean=False) statistics
  std::vector<Discretized> bins;    // empty without discretisation
};

TabularStats tabular_stats(const at::Tensor& train, bool discretize, const std::string& discretizer) {
  TabularStats s;
  const at::Tensor t = train.to(at::kDouble).cpu();
  s.mean = t.mean(0);
  at::Tensor scale = t.var(0, /*unbiased=*/false).sqrt();
  s.scale = at::where(scale == 0, at::ones_like(scale), scale);
  if (!discretize) return s;
  const std::vector<double> q = discretizer == "decile"
                                    ? std::vector<double>{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
                                    : std::vector<double>{0.25, 0.5, 0.75};
  const at::Tensor qt = at::tensor(q, at::kDouble);
  for (int64_t j = 0; j < t.size(1); ++j) {
    const at::Tensor col = t.select(1, j).contiguous();
    Discretized b;
    // np.percentile's default linear interpolation, then np.unique.
    const at::Tensor qs = at::quantile(col, qt);
    for (int64_t k = 0; k < qs.numel(); ++k) b.qts.push_back(qs[k].item<double>());
    b.qts.erase(std::unique(b.qts.begin(), b.qts.end()), b.qts.end());
    const int64_t nb = static_cast<int64_t>(b.qts.size()) + 1;
    std::vector<double> sum(nb, 0), sum2(nb, 0);
    std::vector<int64_t> count(nb, 0);
    const double* c = col.data_ptr<double>();
    for (int64_t r = 0; r < col.numel(); ++r) {
      const int64_t k = b.bin(c[r]);
      sum[k] += c[r];
      count[k] += 1;
    }
    for (int64_t r = 0; r < col.numel(); ++r) {
      const int64_t k = b.bin(c[r]);
      const double dv = c[r] - sum[k] / count[k];
      sum2[k] += dv * dv;
    }
    const double lo = col.min().item<double>(), hi = col.max().item<double>();
    std::vector<double> freqs;
    for (int64_t k = 0; k < nb; ++k) {
      b.means.push_back(count[k] ? sum[k] / count[k] : 0.0);
      b.stds.push_back((count[k] ? std::sqrt(sum2[k] / count[k]) : 0.0) + 0.00000000001);
      b.mins.push_back(k == 0 ? lo : b.qts[k - 1]);
      b.maxs.push_back(k == nb - 1 ? hi : b.qts[k]);
      if (count[k]) b.values.push_back(k), freqs.push_back(static_cast<double>(count[k]) / col.numel());
    }
    b.freqs = at::tensor(freqs, at::kDouble);
    s.bins.push_back(std::move(b));
  }
  return s;
}

// The neighbourhood of one row (lime's __data_inverse): z (what the surrogate sees), the
// model inputs, and the distances to z[0].
struct Neighbourhood {
  at::Tensor z, inputs, distances;
};

Neighbourhood tabular_neighbourhood(const TabularStats& st, const at::Tensor& x_row, int64_t s, bool around,
                                    at::Generator& gen) {
  const int64_t d = x_row.numel();
  const at::Tensor x = x_row.to(at::kDouble).cpu();
  Neighbourhood nb;
  if (st.bins.empty()) {
    at::Tensor data = at::randn({s, d}, gen, kD) * st.scale + (around ? x : st.mean);
    data[0] = x;
    nb.z = (data - st.mean) / st.scale;
    nb.inputs = data;
    nb.distances = (nb.z - nb.z[0]).norm(2, {1});
    return nb;
  }
  at::Tensor z = at::empty({s, d}, kD), data = at::empty({s, d}, kD);
  for (int64_t j = 0; j < d; ++j) {
    const Discretized& b = st.bins[j];
    const int64_t own = b.bin(x[j].item<double>());
    const at::Tensor pick = at::multinomial(b.freqs, s, /*replacement=*/true, gen);
    const at::Tensor bins = index(b.values).index_select(0, pick);
    at::Tensor binary = (bins == own).to(at::kDouble);
    binary[0] = 1.0;
    z.select(1, j).copy_(binary);
    // Undiscretise: a truncated normal fitted to the sampled bin, within its borders.
    const at::Tensor mins = at::tensor(b.mins, at::kDouble).index_select(0, bins);
    const at::Tensor maxs = at::tensor(b.maxs, at::kDouble).index_select(0, bins);
    const at::Tensor means = at::tensor(b.means, at::kDouble).index_select(0, bins);
    const at::Tensor stds = at::tensor(b.stds, at::kDouble).index_select(0, bins);
    const at::Tensor u = at::rand({s}, gen, kD);
    const at::Tensor v = means + stds * truncated_normal((mins - means) / stds, (maxs - means) / stds, u);
    data.select(1, j).copy_(at::where(mins == maxs, mins, v));
  }
  data[0] = x;
  nb.z = z;
  nb.inputs = data;
  nb.distances = (z - 1.0).norm(2, {1});
  return nb;
}

std::vector<std::string> feature_names(const Model& model, int64_t d) {
  const auto& names = model.feature_names();
  if (static_cast<int64_t>(names.size()) == d) return names;
  std::vector<std::string> out;
  for (int64_t j = 0; j < d; ++j) out.push_back(str_cat("f", j));
  return out;
}

// lime's discretised feature names: "age <= 30.00", "30.00 < age <= 45.00", "age > 45.00".
std::string bin_name(const Discretized& b, const std::string& name, int64_t k) {
  const int64_t nq = static_cast<int64_t>(b.qts.size());
  if (k == 0) return name + " <= " + fmt2(b.qts[0]);
  if (k == nq) return name + " > " + fmt2(b.qts[nq - 1]);
  return fmt2(b.qts[k - 1]) + " < " + name + " <= " + fmt2(b.qts[k]);
}

std::string resolve_mode(const std::string& mode, const at::Tensor& x, const InputSpec& spec) {
  if (mode != "auto") return mode;
  if (spec.layout == "NC") return "tabular";
  if (spec.layout == "NL") return "text";
  if (spec.layout == "NCHW" || spec.layout == "NHWC") return "image";
  if (x.dim() == 2) return "tabular";
  if (x.dim() == 4) return "image";
  throw InvalidArgument(str_cat("lime: cannot tell how to perturb inputs of shape ", detail::shape_str(x.sizes()),
                                " with input layout '", spec.layout, "'; set the layout (NC tabular, NCHW/NHWC image, ",
                                "NL token ids) or the option mode=tabular|image|text."));
}

// Compact feature ids: the ids present in `gid` [D] renumbered 0..G-1 (lime uses the
// segments that exist, np.unique(segments)); `skip` maps to G (never a feature).
std::pair<at::Tensor, int64_t> compact(const at::Tensor& gid, const at::Tensor& skip = {}) {
  at::Tensor g = gid.to(at::kLong).cpu().contiguous();
  if (skip.defined()) g = at::where(skip, at::full_like(g, -1), g);
  const at::Tensor ids = std::get<0>(at::_unique(g.masked_select(g >= 0), /*sorted=*/true));
  const int64_t count = ids.numel();
  at::Tensor out = at::full_like(g, count);
  const at::Tensor valid = g >= 0;
  if (count > 0) out.masked_scatter_(valid, at::searchsorted(ids, g.masked_select(valid)));
  return {out, count};
}

// The random stream of one instance: a hash (FNV-1a) of its values, so that an instance gets
// the same neighbourhood whichever batch it comes in, and different instances different ones.
uint64_t content_stream(const at::Tensor& row) {
  const auto* p = reinterpret_cast<const unsigned char*>(row.data_ptr<double>());
  uint64_t h = 1469598103934665603ull;
  for (int64_t k = 0; k < row.numel() * static_cast<int64_t>(sizeof(double)); ++k) h = (h ^ p[k]) * 1099511628211ull;
  return h;
}

}  // namespace

LinearSurrogate fit_lime_surrogate(const at::Tensor& z, const at::Tensor& y, const at::Tensor& weights,
                                   const std::string& feature_selection, int64_t num_features,
                                   const std::string& regressor, double alpha) {
  const Normal n = normal_equations(z, y, weights);
  const int64_t d = n.z.size(1);
  std::vector<int64_t> used(d);
  std::iota(used.begin(), used.end(), 0);
  std::string method = feature_selection;
  if (method == "auto") method = num_features <= 6 ? "forward_selection" : "highest_weights";
  // With at least as many features allowed as there are, both selections keep them all.
  if (method != "none" && num_features < d)
    used = method == "forward_selection" ? forward_selection(n, num_features) : highest_weights(n, num_features);

  const at::Tensor cols = index(used);
  const int64_t k = cols.numel();
  const at::Tensor b = regressor == "lasso" ? lasso_coef(n, cols, alpha) : ridge_coef(n, cols, alpha);
  LinearSurrogate s;
  s.features = used;
  s.coef.assign(d, 0.0);
  for (int64_t j = 0; j < k; ++j) s.coef[used[j]] = b[j].item<double>();
  s.intercept = n.ymean - at::dot(n.zmean.index_select(0, cols), b).item<double>();
  const at::Tensor zs = n.z.index_select(1, cols);
  const at::Tensor residual = n.y - (at::matmul(zs, b) + s.intercept);
  const double ssr = at::dot(n.w, residual * residual).item<double>();
  s.score = n.yy > 0 ? 1.0 - ssr / n.yy : (ssr <= 0 ? 1.0 : 0.0);
  s.local_prediction = s.intercept + at::dot(zs[0], b).item<double>();
  const int64_t dof = n.z.size(0) - k - 1;
  if (regressor == "ridge" && dof > 0) {
    const at::Tensor g = sub_gram(n, cols);
    const at::Tensor inv = at::linalg_pinv(g + alpha * at::eye(k, kD), 1e-12, /*hermitian=*/true);
    const at::Tensor cov = at::matmul(at::matmul(inv, g), inv) * (ssr / dof);
    const at::Tensor se = cov.diagonal().clamp_min(0).sqrt();
    s.standard_error.assign(d, 0.0);
    for (int64_t j = 0; j < k; ++j) s.standard_error[used[j]] = se[j].item<double>();
  }
  return s;
}

void Lime::Options::validate() const {
  CANDELA_CHECK(num_samples >= 2, "lime: num_samples must be at least 2 (the instance and one perturbation), got ",
                num_samples, "; lime's default is 5000.");
  CANDELA_CHECK(num_samples <= 10000000, "lime: num_samples = ", num_samples, " is absurd; use at most 10000000.");
  CANDELA_CHECK(std::isfinite(kernel_width) && kernel_width >= 0, "lime: kernel_width must be >= 0 (0 = lime's ",
                "default), got ", kernel_width, ".");
  CANDELA_CHECK(num_features >= 1, "lime: num_features must be at least 1, got ", num_features, ".");
  CANDELA_CHECK(std::isfinite(alpha) && alpha >= 0, "lime: alpha must be >= 0, got ", alpha, ".");
  for (double c : hide_color)
    CANDELA_CHECK(std::isfinite(c), "lime: hide_color values must be finite numbers, got ", c, ".");
  auto one_of = [](const char* name, const std::string& value, const std::vector<std::string>& choices) {
    CANDELA_CHECK(std::find(choices.begin(), choices.end(), value) != choices.end(), "lime: unknown ", name, " '",
                  value, "'.", did_you_mean(value, choices));
  };
  one_of("mode", mode, {"auto", "tabular", "image", "text"});
  one_of("feature_selection", feature_selection, {"auto", "none", "forward_selection", "highest_weights"});
  one_of("regressor", regressor, {"ridge", "lasso"});
  one_of("discretizer", discretizer, {"quartile", "decile"});
}

Attribution Lime::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const Options& o = options_;
  const at::Tensor& x = req.inputs;
  const InputSpec& spec = ev.model().input_spec();
  const std::string mode = resolve_mode(o.mode, x, spec);
  const int64_t n = x.size(0), s = o.num_samples;
  const int64_t per = x.numel() / n;
  const std::vector<int64_t> sample_shape(x.sizes().begin() + 1, x.sizes().end());
  std::vector<int64_t> batch_shape = sample_shape;
  batch_shape.insert(batch_shape.begin(), -1);
  const at::Tensor xf = x.reshape({n, per}).to(at::kDouble).cpu();

  // Checks that need no model evaluation come first.
  TabularStats stats;
  at::Tensor masks;  // int64 [N, D] group ids (image; text with a feature mask)
  if (mode == "tabular") {
    CANDELA_CHECK(x.dim() == 2, "lime: tabular mode explains 2-d inputs [N, columns], got shape ",
                  detail::shape_str(x.sizes()), "; use mode=image or mode=text, or flatten the rows.");
    CANDELA_CHECK(!req.feature_mask.defined(), "lime: tabular mode explains each column; a feature_mask (--features) ",
                  "is not supported here. Drop it.");
    CANDELA_CHECK(req.baseline.is_distribution(), "lime: tabular mode samples with the training data's statistics "
                  "(per-column mean, std and quartiles), so the baseline must be a distribution of training rows: "
                  "pass --baseline dist:train.npy (or a CSV of training rows); got baseline '",
                  req.baseline.describe(), "'.");
    const at::Tensor train = req.baseline.samples(x, spec.layout, 0);
    CANDELA_CHECK(train.size(0) >= 1, "lime: the training-row distribution is empty.");
    stats = tabular_stats(train.reshape({train.size(0), per}), o.discretize_continuous, o.discretizer);
  } else if (mode == "image") {
    CANDELA_CHECK(req.feature_mask.defined(), "lime: image mode turns superpixels on and off and needs them as a "
                  "feature mask: pass --features slic:20 (or felzenszwalb:100, grid:16, or an .npy of segment ids).");
    masks = expand_feature_mask(req.feature_mask, x, spec).reshape({n, per}).cpu();
  } else {
    CANDELA_CHECK(x.dim() == 2, "lime: text mode explains token ids [N, L], got shape ", detail::shape_str(x.sizes()), ".");
    CANDELA_CHECK(at::equal(xf, xf.round()), "lime: text mode needs integer token ids (stored as floats); the input "
                  "has fractional values. Use mode=tabular for continuous columns.");
    if (req.feature_mask.defined()) masks = expand_feature_mask(req.feature_mask, x, spec).reshape({n, per}).cpu();
  }
  const std::vector<std::string> names = feature_names(ev.model(), per);

  const at::Tensor out_x = forward_all(ev, "lime: instances", x);
  const Target target = req.target.resolve(out_x);
  const at::Tensor y_x = target.scores(out_x, at::arange(n, kL)).to(at::kDouble).cpu();

  at::Tensor values = at::zeros({n, per}, kD);
  nlohmann::json scores = nlohmann::json::array(), intercepts = nlohmann::json::array(),
                 local = nlohmann::json::array(), errors = nlohmann::json::array(),
                 described = nlohmann::json::array(), counts = nlohmann::json::array();
  double width_used = 0;
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor xi = xf[i].contiguous();
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o.seed), content_stream(xi));
    at::Tensor z, distances, fidx;  // fidx [D]: the feature of each element (G: none)
    int64_t g = 0;
    double width = o.kernel_width;
    Evaluator::MakeRows make;
    at::Tensor inputs;  // tabular: every row's model input
    if (mode == "tabular") {
      Neighbourhood nb = tabular_neighbourhood(stats, xi, s, o.sample_around_instance, gen);
      z = nb.z;
      distances = nb.distances;
      inputs = nb.inputs;
      g = per;
      fidx = at::arange(per, kL);
      if (width == 0) width = std::sqrt(static_cast<double>(per)) * 0.75;
      make = [&](int64_t b, int64_t e) {
        return Rows{inputs.slice(0, b + 1, e + 1).to(x.options()), at::full({e - b}, i, kL), {}};
      };
    } else if (mode == "image") {
      std::tie(fidx, g) = compact(masks[i]);
      CANDELA_CHECK(g >= 1, "lime: sample ", i, "'s feature mask has no segments.");
      // Hidden superpixels: lime's fudged image, each segment's per-channel mean by default.
      at::Tensor hidden;
      const ImageAxes axes = image_axes(x, spec);
      const int64_t channels = axes.c >= 0 ? x.size(axes.c) : 1;
      at::Tensor channel = at::zeros({per}, kL);
      if (axes.c >= 0) {
        std::vector<int64_t> shape(sample_shape.size(), 1);
        shape[axes.c - 1] = channels;
        channel = at::arange(channels, kL).view(shape).expand(sample_shape).reshape({per});
      }
      if (o.hide_color.empty()) {
        const at::Tensor key = fidx * channels + channel;
        const at::Tensor sums = at::zeros({g * channels}, kD).index_add_(0, key, xi);
        const at::Tensor cnt = at::zeros({g * channels}, kD).index_add_(0, key, at::ones_like(xi));
        hidden = (sums / cnt.clamp_min(1)).index_select(0, key);
      } else {
        CANDELA_CHECK(o.hide_color.size() == 1 || static_cast<int64_t>(o.hide_color.size()) == channels,
                      "lime: hide_color needs one value or one per channel (", channels, "), got ",
                      o.hide_color.size(), ".");
        const at::Tensor c = at::tensor(o.hide_color, at::kDouble);
        hidden = o.hide_color.size() == 1 ? at::full({per}, o.hide_color[0], kD) : c.index_select(0, channel);
      }
      z = at::randint(0, 2, {s, g}, gen, kD);
      z[0] = 1.0;
      distances = cosine_to_ones(z);
      if (width == 0) width = 0.25;
      make = [&, hidden](int64_t b, int64_t e) {
        const at::Tensor keep = z.slice(0, b + 1, e + 1).index_select(1, fidx) > 0.5;
        at::Tensor rows = at::where(keep, xi.unsqueeze(0), hidden.unsqueeze(0));
        return Rows{rows.reshape(batch_shape).to(x.options()), at::full({e - b}, i, kL), {}};
      };
    } else {
      const at::Tensor tokens = xi.to(at::kLong);
      const at::Tensor pad = tokens == o.mask_token;
      if (masks.defined()) std::tie(fidx, g) = compact(masks[i], pad);
      else if (o.bow) std::tie(fidx, g) = compact(tokens, pad);
      else std::tie(fidx, g) = compact(at::arange(per, kL), pad);
      CANDELA_CHECK(g >= 1, "lime: sample ", i, " has no tokens other than mask_token (", o.mask_token,
                    "); nothing to remove.");
      // lime_text: remove a uniform number 1..G of features, chosen uniformly.
      z = at::ones({s, g}, kD);
      const at::Tensor size = at::randint(1, g + 1, {s - 1, 1}, gen, kL);
      const at::Tensor ranks = at::rand({s - 1, g}, gen, kD).argsort(1, false).argsort(1, false);
      z.slice(0, 1, s).copy_((ranks >= size).to(at::kDouble));
      distances = cosine_to_ones(z) * 100.0;
      if (width == 0) width = 25.0;
      const at::Tensor zext = at::cat({z, at::ones({s, 1}, kD)}, 1);
      make = [&, zext](int64_t b, int64_t e) {
        const at::Tensor keep = zext.slice(0, b + 1, e + 1).index_select(1, fidx) > 0.5;
        at::Tensor rows = at::where(keep, xi.unsqueeze(0), at::full({1, per}, static_cast<double>(o.mask_token), kD));
        return Rows{rows.reshape(batch_shape).to(x.options()), at::full({e - b}, i, kL), {}};
      };
    }
    width_used = width;

    at::Tensor y = at::empty({s}, kD);
    y[0] = y_x[i];
    ev.forward("lime", s - 1, make, [&](int64_t b, int64_t e, const Rows& rows, const at::Tensor& out) {
      y.slice(0, b + 1, e + 1).copy_(target.scores(out, rows.sample).to(at::kDouble).cpu());
    });
    const at::Tensor w = kernel(distances, width);
    const LinearSurrogate fit =
        fit_lime_surrogate(z, y, w, o.feature_selection, o.num_features, o.regressor, o.alpha);

    // Each element gets its feature's coefficient.
    const at::Tensor coef = at::cat({at::tensor(fit.coef, at::kDouble), at::zeros({1}, kD)});
    values[i] = coef.index_select(0, fidx);
    scores.push_back(fit.score);
    intercepts.push_back(fit.intercept);
    local.push_back(fit.local_prediction);
    errors.push_back(fit.standard_error);
    counts.push_back(g);
    if (mode == "tabular") {
      std::vector<int64_t> order = fit.features;
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return std::abs(fit.coef[a]) > std::abs(fit.coef[b]); });
      nlohmann::json list = nlohmann::json::array();
      for (int64_t j : order) {
        const std::string label =
            stats.bins.empty() ? names[j] : bin_name(stats.bins[j], names[j], stats.bins[j].bin(xi[j].item<double>()));
        list.push_back({{"feature", label}, {"weight", fit.coef[j]}});
      }
      described.push_back(list);
    }
  }

  Attribution a;
  a.values = values.view(x.sizes()).to(x.options());
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.extra = {{"mode", mode},           {"kernel_width", width_used}, {"score", scores},
             {"intercept", intercepts}, {"local_prediction", local},  {"feature_count", counts}};
  if (o.regressor == "ridge") a.extra["standard_error"] = errors;
  if (mode == "tabular") a.extra["explanation"] = described;
  std::vector<int64_t> poor;
  for (size_t i = 0; i < scores.size(); ++i)
    if (scores[i] < 0.5) poor.push_back(static_cast<int64_t>(i));
  if (!poor.empty())
    a.warn("poor_surrogate_fit",
           str_cat("lime's local surrogate fits the model poorly for ", poor.size(), " of ", scores.size(),
                   " sample(s) (weighted R^2 below 0.5, lowest ", *std::min_element(scores.begin(), scores.end()),
                   "): its weights explain little of the model's behaviour there. Raise num_samples, change "
                   "kernel_width, or use fewer, larger features."),
           {{"samples", poor}, {"score", scores}, {"threshold", 0.5}});
  return a;
}

}  // namespace candela
