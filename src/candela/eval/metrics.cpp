#include "candela/eval/metrics.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "candela/core/batching.h"
#include "candela/core/model.h"
#include "candela/core/target.h"
#include "candela/detail/tensor_util.h"

namespace candela {
using detail::str_cat;

namespace {

const auto kDouble = at::TensorOptions().dtype(at::kDouble);
const auto kLong = at::TensorOptions().dtype(at::kLong);
const double kNaN = std::numeric_limits<double>::quiet_NaN();

bool image_input(const at::Tensor& x, const InputSpec& spec) {
  return x.dim() == 4 && (spec.layout == "NCHW" || spec.layout == "NHWC");
}

// Scores of the explained classes over a stream of inputs: make(b, e) -> rows, target of row r
// is targets[owner[r]]. Logits, or softmax probabilities.
at::Tensor evaluate_rows(const Model& model, const EvalOptions& eval, int64_t total,
                         const std::function<at::Tensor(int64_t, int64_t)>& make, const at::Tensor& owner,
                         const at::Tensor& targets, bool softmax, const char* stage) {
  Evaluator ev(model, eval);
  at::Tensor out = at::empty({total}, kDouble);
  ev.forward(
      stage, total,
      [&](int64_t b, int64_t e) { return Rows{make(b, e), owner.slice(0, b, e), {}}; },
      [&](int64_t b, int64_t e, const Rows& rows, const at::Tensor& o) {
        at::Tensor logits = o.reshape({o.size(0), -1}).to(at::kCPU, at::kDouble);
        if (softmax) logits = logits.softmax(1);
        out.slice(0, b, e).copy_(logits.gather(1, targets.index_select(0, rows.sample).view({-1, 1})).view({-1}));
      });
  return out;
}

// Pixel (image) or element selection [N, P] -> a mask of the inputs' shape.
at::Tensor expand_selection(const at::Tensor& sel, const at::Tensor& x, const InputSpec& spec) {
  const int64_t n = x.size(0);
  if (!image_input(x, spec)) return sel.view(x.sizes());
  if (spec.layout == "NCHW") return sel.view({n, 1, x.size(2), x.size(3)}).expand(x.sizes());
  return sel.view({n, x.size(1), x.size(2), 1}).expand(x.sizes());
}

// Quantus' perturb_baseline: black = the sample's minimum, white = maximum, mean, zeros, uniform
// noise between them.
at::Tensor baseline_values(const at::Tensor& x, const std::string& kind, at::Generator& gen) {
  const int64_t n = x.size(0);
  const at::Tensor flat = x.reshape({n, -1});
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = n;
  if (kind == "black") return std::get<0>(flat.min(1)).view(shape).expand(x.sizes());
  if (kind == "white") return std::get<0>(flat.max(1)).view(shape).expand(x.sizes());
  if (kind == "mean") return flat.mean(1).view(shape).expand(x.sizes());
  if (kind == "zeros") return at::zeros_like(x);
  if (kind == "uniform") {
    const at::Tensor lo = std::get<0>(flat.min(1)).view(shape), hi = std::get<0>(flat.max(1)).view(shape);
    return lo + (hi - lo) * at::rand(x.sizes(), gen, x.options());
  }
  throw InvalidArgument(str_cat("perturb_baseline must be black, white, mean, zeros or uniform, got '", kind, "'."));
}

void check_baseline_kind(const std::string& kind) {
  static const std::vector<std::string> k = {"black", "white", "mean", "zeros", "uniform"};
  CANDELA_CHECK(std::find(k.begin(), k.end(), kind) != k.end(), "perturb_baseline must be one of black, white, mean, "
                "zeros, uniform; got '", kind, "'.", did_you_mean(kind, k));
}

// Descending order of the map per sample (ties broken by index, so results are deterministic).
at::Tensor descending(const at::Tensor& map) { return std::get<1>(map.sort(/*stable=*/true, 1, /*descending=*/true)); }

at::Tensor re_explain(const MetricInput& in, const Model& model, const at::Tensor& x, const at::Tensor& targets) {
  ExplainRequest r = in.request;
  r.inputs = x;
  r.target = detail::class_target(targets);
  r.eval = in.eval;
  return in.explainer->explain(model, r).values;
}

template <class Opts>
nlohmann::json opts_json(const Opts& o) {
  return options_to_json(o);
}

// ---- faithfulness ------------------------------------------------------------------------

// Deletion and insertion (Petsiuk, Das & Saenko 2018, RISE): pixels in order of importance are
// removed (set to the substrate: black) or inserted (into a blurred copy), n_steps steps; the
// score is the area under the target-probability curve (lower is better for deletion).
class DeletionInsertion : public Metric {
 public:
  struct Options {
    int64_t n_steps = 100;
    std::string substrate;  // default: zeros for deletion, blur:5 for insertion (the paper's)
    bool softmax = true;
    template <class V> void visit(V& v) {
      v("n_steps", n_steps, "Steps of the curve (RISE: pixels per step = pixels / n_steps).");
      v("substrate", substrate, "A --baseline: zeros (deletion's default), blur:SIGMA (insertion's: blur:5), ...");
      v("softmax", softmax, "Score the class probability (the paper) instead of the logit.");
    }
    void validate() const { CANDELA_CHECK(n_steps >= 1, "n_steps must be >= 1, got ", n_steps, "."); }
  };
  DeletionInsertion(Options o, bool insertion) : o_(std::move(o)), insertion_(insertion) {
    o_.validate();
    if (o_.substrate.empty()) o_.substrate = insertion_ ? "blur:5" : "zeros";
    Baseline::parse(o_.substrate);
  }
  std::string name() const override { return insertion_ ? "insertion" : "deletion"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return insertion_; }
  at::Tensor score(const MetricInput& in, nlohmann::json* details) const override {
    const InputSpec& spec = in.model->input_spec();
    const at::Tensor& x = in.inputs;
    const FeatureMap fm = feature_map(in.attributions, x, spec);
    const int64_t n = x.size(0), p = fm.values.size(1);
    const at::Tensor order = descending(fm.values);
    const at::Tensor substrate = Baseline::parse(o_.substrate).for_inputs(x, spec.layout, 0).to(x.options());
    const int64_t step = (p + o_.n_steps - 1) / o_.n_steps, points = o_.n_steps + 1;
    const at::Tensor owner = at::arange(n, kLong).repeat_interleave(points);
    const at::Tensor ranks = at::empty_like(order).scatter_(1, order, at::arange(p, kLong).expand({n, p}).contiguous());
    auto make = [&](int64_t b, int64_t e) {
      std::vector<at::Tensor> rows;
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r / points, k = r % points;
        const at::Tensor sel = expand_selection(ranks[i].lt(k * step).unsqueeze(0), x.slice(0, i, i + 1), spec);
        rows.push_back(insertion_ ? at::where(sel, x.slice(0, i, i + 1), substrate.slice(0, i, i + 1))
                                  : at::where(sel, substrate.slice(0, i, i + 1), x.slice(0, i, i + 1)));
      }
      return at::cat(rows);
    };
    const at::Tensor curve = evaluate_rows(*in.model, in.eval, n * points, make, owner, in.targets, o_.softmax,
                                           insertion_ ? "insertion" : "deletion")
                                 .view({n, points});
    if (details) (*details)["curve"] = detail::tensor_to_json(curve);
    // RISE's auc(): trapezoid over [0, 1].
    return (curve.sum(1) - curve.select(1, 0) / 2 - curve.select(1, points - 1) / 2) / (points - 1);
  }

 private:
  Options o_;
  bool insertion_;
};

// Region perturbation (Samek et al. 2017; Quantus' RegionPerturbation): patches in MoRF
// (most relevant first), LeRF or random order are replaced by the baseline one after another;
// the curve is f(x) - f(x_k) (probabilities, Quantus' default; logits with softmax = false) and
// the score AOPC, its mean over the regions_evaluation steps. The "mean" baseline is the
// original sample's mean (Quantus recomputes it from the partly perturbed image at each step).
class RegionPerturbation : public Metric {
 public:
  struct Options {
    int64_t patch_size = 8;
    std::string order = "morf";
    int64_t regions_evaluation = 100;
    std::string perturb_baseline = "black";
    bool softmax = true;
    int64_t seed = 0;
    template <class V> void visit(V& v) {
      v("patch_size", patch_size, "Side of the square patches (images); elements otherwise.");
      v("softmax", softmax, "Score class probabilities (Quantus' default) instead of logits.");
      v("order", order, "morf (most relevant first), lerf (least relevant first) or random.",
        std::vector<std::string>{"morf", "lerf", "random"});
      v("regions_evaluation", regions_evaluation, "Patches perturbed (curve length).");
      v("perturb_baseline", perturb_baseline, "black (the sample's minimum), white, mean, zeros or uniform.");
      v("seed", seed, "Seed of the random order and uniform baseline.");
    }
    void validate() const {
      CANDELA_CHECK(patch_size >= 1 && regions_evaluation >= 1, "patch_size and regions_evaluation must be >= 1.");
      check_baseline_kind(perturb_baseline);
    }
  };
  explicit RegionPerturbation(Options o) : o_(std::move(o)) { o_.validate(); }
  std::string name() const override { return "region_perturbation"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return o_.order == "morf"; }
  at::Tensor score(const MetricInput& in, nlohmann::json* details) const override {
    const InputSpec& spec = in.model->input_spec();
    const at::Tensor& x = in.inputs;
    const FeatureMap fm = feature_map(in.attributions, x, spec);
    const int64_t n = x.size(0), p = fm.values.size(1);
    // Patch id of every pixel (or element).
    at::Tensor patch;
    int64_t patches;
    if (fm.image) {
      const int64_t ph = (fm.height + o_.patch_size - 1) / o_.patch_size, pw = (fm.width + o_.patch_size - 1) / o_.patch_size;
      const at::Tensor r = at::arange(fm.height, kLong).div(o_.patch_size, "floor").view({-1, 1});
      const at::Tensor c = at::arange(fm.width, kLong).div(o_.patch_size, "floor").view({1, -1});
      patch = (r * pw + c).reshape({-1});
      patches = ph * pw;
    } else {
      patch = at::arange(p, kLong);
      patches = p;
    }
    const at::Tensor sums = at::zeros({n, patches}, kDouble).index_add_(1, patch, fm.values);
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o_.seed), 0x7e9);
    at::Tensor order;
    if (o_.order == "random") {
      order = at::stack([&] {
        std::vector<at::Tensor> v;
        for (int64_t i = 0; i < n; ++i) v.push_back(at::randperm(patches, gen, kLong));
        return v;
      }());
    } else {
      order = std::get<1>(sums.sort(true, 1, o_.order == "morf"));
    }
    const int64_t steps = std::min(o_.regions_evaluation, patches);
    const at::Tensor base = baseline_values(x, o_.perturb_baseline, gen);
    // rank of each patch in the order; pixel selected at step k if its patch's rank < k.
    const at::Tensor rank = at::empty_like(order).scatter_(1, order, at::arange(patches, kLong).expand({n, patches}).contiguous());
    const at::Tensor pixel_rank = rank.index_select(1, patch);  // [n, p]
    const int64_t points = steps + 1;
    const at::Tensor owner = at::arange(n, kLong).repeat_interleave(points);
    auto make = [&](int64_t b, int64_t e) {
      std::vector<at::Tensor> rows;
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r / points, k = r % points;
        const at::Tensor sel = expand_selection(pixel_rank[i].lt(k).unsqueeze(0), x.slice(0, i, i + 1), spec);
        rows.push_back(at::where(sel, base.slice(0, i, i + 1), x.slice(0, i, i + 1)));
      }
      return at::cat(rows);
    };
    const at::Tensor f = evaluate_rows(*in.model, in.eval, n * points, make, owner, in.targets, o_.softmax,
                                       "region_perturbation")
                             .view({n, points});
    const at::Tensor curve = f.select(1, 0).unsqueeze(1) - f.slice(1, 1);
    if (details) (*details)["curve"] = detail::tensor_to_json(curve);
    return curve.mean(1);
  }

 private:
  Options o_;
};

// Noisy linear imputation (Rong et al. 2022, ROAD; Quantus' noisy_linear_imputation): removed
// pixels take the weighted mean of their 8 neighbours (1/6 sides, 1/12 corners), solved as one
// linear system per channel (conjugate gradients), plus Gaussian noise.
at::Tensor impute(const at::Tensor& img /* [C, H, W] double */, const at::Tensor& removed /* [H, W] bool */, double noise,
                  at::Generator& gen) {
  const int64_t c = img.size(0), h = img.size(1), w = img.size(2);
  std::vector<int64_t> var(h * w, -1);
  auto rem = removed.contiguous();
  const bool* rp = rem.data_ptr<bool>();
  std::vector<int64_t> ids;
  for (int64_t k = 0; k < h * w; ++k)
    if (rp[k]) var[k] = static_cast<int64_t>(ids.size()), ids.push_back(k);
  const int64_t m = static_cast<int64_t>(ids.size());
  at::Tensor out = img.clone();
  if (m == 0) return out;
  static const int dy[8] = {1, 0, -1, 1, 0, -1, 1, -1}, dx[8] = {1, 1, 1, -1, -1, -1, 0, 0};
  static const double wt[8] = {1.0 / 12, 1.0 / 6, 1.0 / 12, 1.0 / 12, 1.0 / 6, 1.0 / 12, 1.0 / 6, 1.0 / 6};
  // A v = b with A = diag(sum of valid neighbour weights) - W_unknown (symmetric, positive).
  std::vector<double> diag(m, 0.0);
  for (int64_t i = 0; i < m; ++i) {
    const int64_t y = ids[i] / w, xx = ids[i] % w;
    for (int t = 0; t < 8; ++t) {
      const int64_t ny = y + dy[t], nx = xx + dx[t];
      if (ny >= 0 && ny < h && nx >= 0 && nx < w) diag[i] += wt[t];
    }
  }
  auto apply = [&](const std::vector<double>& v, std::vector<double>& r) {
    for (int64_t i = 0; i < m; ++i) {
      const int64_t y = ids[i] / w, xx = ids[i] % w;
      double s = diag[i] * v[i];
      for (int t = 0; t < 8; ++t) {
        const int64_t ny = y + dy[t], nx = xx + dx[t];
        if (ny < 0 || ny >= h || nx < 0 || nx >= w) continue;
        const int64_t j = var[ny * w + nx];
        if (j >= 0) s -= wt[t] * v[j];
      }
      r[i] = s;
    }
  };
  auto acc = out.accessor<double, 3>();
  const at::Tensor noise_t = at::randn({c, m}, gen, kDouble) * noise;
  auto na = noise_t.accessor<double, 2>();
  for (int64_t ch = 0; ch < c; ++ch) {
    std::vector<double> b(m, 0.0), v(m, 0.0), r(m), pv(m), ap(m);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t y = ids[i] / w, xx = ids[i] % w;
      for (int t = 0; t < 8; ++t) {
        const int64_t ny = y + dy[t], nx = xx + dx[t];
        if (ny >= 0 && ny < h && nx >= 0 && nx < w && var[ny * w + nx] < 0) b[i] += wt[t] * acc[ch][ny][nx];
      }
    }
    r = b;
    pv = r;
    double rr = std::inner_product(r.begin(), r.end(), r.begin(), 0.0);
    const double stop = 1e-20 * std::max(1.0, rr);
    for (int64_t it = 0; it < 4 * m + 100 && rr > stop; ++it) {
      apply(pv, ap);
      const double alpha = rr / std::max(1e-300, std::inner_product(pv.begin(), pv.end(), ap.begin(), 0.0));
      for (int64_t i = 0; i < m; ++i) v[i] += alpha * pv[i], r[i] -= alpha * ap[i];
      const double next = std::inner_product(r.begin(), r.end(), r.begin(), 0.0);
      for (int64_t i = 0; i < m; ++i) pv[i] = r[i] + next / rr * pv[i];
      rr = next;
    }
    for (int64_t i = 0; i < m; ++i) acc[ch][ids[i] / w][ids[i] % w] = v[i] + na[ch][i];
  }
  return out;
}

class Road : public Metric {
 public:
  struct Options {
    std::vector<double> percentages;  // default 1, 3, ..., 99 (Quantus)
    double noise = 0.01;
    std::string order = "morf";
    int64_t seed = 0;
    template <class V> void visit(V& v) {
      v("percentages", percentages, "Percentages of pixels imputed (default 1, 3, ..., 99, Quantus').");
      v("noise", noise, "Std of the Gaussian noise added to the imputed values.");
      v("order", order, "morf (most relevant removed first) or lerf.", std::vector<std::string>{"morf", "lerf"});
      v("seed", seed, "Seed of the noise.");
    }
    void validate() const {
      for (double p : percentages) CANDELA_CHECK(p > 0 && p < 100, "percentages must be in (0, 100), got ", p, ".");
      CANDELA_CHECK(noise >= 0, "noise must be >= 0.");
    }
  };
  explicit Road(Options o) : o_(std::move(o)) {
    o_.validate();
    if (o_.percentages.empty())
      for (int p = 1; p < 100; p += 2) o_.percentages.push_back(p);
  }
  std::string name() const override { return "road"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return o_.order == "lerf"; }
  at::Tensor score(const MetricInput& in, nlohmann::json* details) const override {
    const InputSpec& spec = in.model->input_spec();
    const at::Tensor& x = in.inputs;
    CANDELA_CHECK(image_input(x, spec), "road imputes pixels from their neighbours: it needs image inputs.");
    const FeatureMap fm = feature_map(in.attributions, x, spec);
    const int64_t n = x.size(0), p = fm.values.size(1), k = static_cast<int64_t>(o_.percentages.size());
    const at::Tensor order = std::get<1>(fm.values.sort(true, 1, o_.order == "morf"));
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o_.seed), 0x20ad);
    const at::Tensor xc = (spec.layout == "NHWC" ? x.permute({0, 3, 1, 2}) : x).to(at::kCPU, at::kDouble).contiguous();
    auto make = [&](int64_t b, int64_t e) {
      std::vector<at::Tensor> rows;
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r / k, j = r % k;
        // Quantus: int(size * p / 100), rounded down.
        const auto count = static_cast<int64_t>(std::floor(static_cast<double>(p) * o_.percentages[j] / 100.0));
        at::Tensor removed = at::zeros({p}, at::TensorOptions().dtype(at::kBool));
        removed.index_fill_(0, order[i].slice(0, 0, count), true);
        at::Tensor img = impute(xc[i], removed.view({fm.height, fm.width}), o_.noise, gen);
        if (spec.layout == "NHWC") img = img.permute({1, 2, 0});
        rows.push_back(img.unsqueeze(0).to(x.options()));
      }
      return at::cat(rows);
    };
    const at::Tensor pred = detail::predict_rows(*in.model, in.eval, n * k, make, "road").view({n, k});
    const at::Tensor kept = pred.eq(in.targets.view({-1, 1})).to(at::kDouble);
    if (details) (*details)["curve"] = detail::tensor_to_json(kept);
    return kept.mean(1);
  }

 private:
  Options o_;
};

// Faithfulness correlation (Bhatt, Weller & Moura 2020; Quantus): Pearson correlation, over
// nr_runs random subsets of subset_size features set to the baseline, between the subset's
// attribution sum and the drop in the target's logit.
class FaithfulnessCorrelation : public Metric {
 public:
  struct Options {
    int64_t nr_runs = 100;
    int64_t subset_size = 224;
    std::string perturb_baseline = "black";
    int64_t seed = 0;
    template <class V> void visit(V& v) {
      v("nr_runs", nr_runs, "Random subsets per sample.");
      v("subset_size", subset_size, "Features per subset (pixels for images); must be below their number.");
      v("perturb_baseline", perturb_baseline, "black (the sample's minimum), white, mean, zeros or uniform.");
      v("seed", seed, "Seed of the subsets.");
    }
    void validate() const {
      CANDELA_CHECK(nr_runs >= 2 && subset_size >= 1, "nr_runs must be >= 2 and subset_size >= 1.");
      check_baseline_kind(perturb_baseline);
    }
  };
  explicit FaithfulnessCorrelation(Options o) : o_(std::move(o)) { o_.validate(); }
  std::string name() const override { return "faithfulness_correlation"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return true; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const InputSpec& spec = in.model->input_spec();
    const at::Tensor& x = in.inputs;
    const FeatureMap fm = feature_map(in.attributions, x, spec);
    const int64_t n = x.size(0), p = fm.values.size(1), runs = o_.nr_runs;
    CANDELA_CHECK(o_.subset_size < p, "faithfulness_correlation: subset_size ", o_.subset_size,
                  " must be smaller than the number of features (", p, "); set --metric-option "
                  "faithfulness_correlation.subset_size=N.");
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o_.seed), 0xfc);
    const at::Tensor base = baseline_values(x, o_.perturb_baseline, gen);
    at::Tensor subsets = at::empty({n, runs, o_.subset_size}, kLong);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t r = 0; r < runs; ++r) subsets[i][r].copy_(at::randperm(p, gen, kLong).slice(0, 0, o_.subset_size));
    const at::Tensor att = fm.values.unsqueeze(1).expand({n, runs, p}).gather(2, subsets).sum(2);  // [n, runs]
    const int64_t points = runs + 1;
    const at::Tensor owner = at::arange(n, kLong).repeat_interleave(points);
    auto make = [&](int64_t b, int64_t e) {
      std::vector<at::Tensor> rows;
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r / points, k = r % points;
        if (k == 0) {
          rows.push_back(x.slice(0, i, i + 1));
          continue;
        }
        at::Tensor sel = at::zeros({1, p}, at::TensorOptions().dtype(at::kBool));
        sel.index_fill_(1, subsets[i][k - 1], true);
        rows.push_back(at::where(expand_selection(sel, x.slice(0, i, i + 1), spec), base.slice(0, i, i + 1),
                                 x.slice(0, i, i + 1)));
      }
      return at::cat(rows);
    };
    const at::Tensor f = evaluate_rows(*in.model, in.eval, n * points, make, owner, in.targets, false,
                                       "faithfulness_correlation")
                             .view({n, points});
    const at::Tensor drop = f.select(1, 0).unsqueeze(1) - f.slice(1, 1);
    return pearson_rows(att, drop);
  }

 private:
  Options o_;
};

// Infidelity (Yeh et al. 2019; Captum's infidelity): E_I[(I . a - (f(x) - f(x - I)))^2] with
// Gaussian perturbations I (Captum's documented perturb_func, std 0.003).
class Infidelity : public Metric {
 public:
  struct Options {
    int64_t n_perturb_samples = 10;
    double noise_std = 0.003;
    bool normalize = false;
    int64_t seed = 0;
    template <class V> void visit(V& v) {
      v("n_perturb_samples", n_perturb_samples, "Perturbations per sample (Captum's default 10).");
      v("noise_std", noise_std, "Std of the Gaussian perturbation I (x - I is evaluated).");
      v("normalize", normalize, "Scale attributions by the least-squares beta first (Captum's normalize).");
      v("seed", seed, "Seed of the perturbations.");
    }
    void validate() const { CANDELA_CHECK(n_perturb_samples >= 1 && noise_std > 0, "n_perturb_samples >= 1, noise_std > 0."); }
  };
  explicit Infidelity(Options o) : o_(std::move(o)) { o_.validate(); }
  std::string name() const override { return "infidelity"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return false; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const at::Tensor& x = in.inputs;
    const int64_t n = x.size(0), s = o_.n_perturb_samples;
    at::Tensor a = in.attributions.to(at::kDouble);
    if (a.sizes() != x.sizes()) a = a.expand(x.sizes());
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o_.seed), 0x1f);
    const at::Tensor noise = at::randn(at::IntArrayRef([&] {
                                         std::vector<int64_t> sh = {n, s};
                                         for (int64_t d = 1; d < x.dim(); ++d) sh.push_back(x.size(d));
                                         return sh;
                                       }()),
                                       gen, kDouble) *
                             o_.noise_std;
    const int64_t points = s + 1;
    const at::Tensor owner = at::arange(n, kLong).repeat_interleave(points);
    auto make = [&](int64_t b, int64_t e) {
      std::vector<at::Tensor> rows;
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r / points, k = r % points;
        rows.push_back(k == 0 ? x.slice(0, i, i + 1) : (x[i].to(at::kDouble) - noise[i][k - 1]).unsqueeze(0).to(x.dtype()));
      }
      return at::cat(rows);
    };
    const at::Tensor f = evaluate_rows(*in.model, in.eval, n * points, make, owner, in.targets, false, "infidelity")
                             .view({n, points});
    const at::Tensor diff = f.select(1, 0).unsqueeze(1) - f.slice(1, 1);                            // [n, s]
    const at::Tensor dot = (noise * a.unsqueeze(1)).reshape({n, s, -1}).sum(2);                      // [n, s]
    at::Tensor beta = at::ones({n, 1}, kDouble);
    if (o_.normalize) beta = ((dot * diff).mean(1) / (dot * dot).mean(1)).unsqueeze(1);
    return (beta * dot - diff).pow(2).mean(1);
  }

 private:
  Options o_;
};

// Comprehensiveness and sufficiency (DeYoung et al. 2020, ERASER): for the top-k% features
// (k in 1, 5, 10, 20, 50), p(x) - p(x without them) and p(x) - p(only them); the mean over k.
class Eraser : public Metric {
 public:
  struct Options {
    std::vector<double> fractions = {0.01, 0.05, 0.1, 0.2, 0.5};
    double mask_value = 0.0;
    bool softmax = true;
    template <class V> void visit(V& v) {
      v("fractions", fractions, "Fractions of features kept or removed (ERASER's bins).");
      v("mask_value", mask_value, "Value of a removed feature (e.g. a padding token id).");
      v("softmax", softmax, "Score the class probability (ERASER) instead of the logit.");
    }
    void validate() const {
      for (double f : fractions) CANDELA_CHECK(f > 0 && f <= 1, "fractions must be in (0, 1], got ", f, ".");
    }
  };
  Eraser(Options o, bool sufficiency) : o_(std::move(o)), sufficiency_(sufficiency) { o_.validate(); }
  std::string name() const override { return sufficiency_ ? "sufficiency" : "comprehensiveness"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return !sufficiency_; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const InputSpec& spec = in.model->input_spec();
    const at::Tensor& x = in.inputs;
    const FeatureMap fm = feature_map(in.attributions, x, spec);
    const int64_t n = x.size(0), p = fm.values.size(1), k = static_cast<int64_t>(o_.fractions.size());
    const at::Tensor order = descending(fm.values);
    const at::Tensor ranks = at::empty_like(order).scatter_(1, order, at::arange(p, kLong).expand({n, p}).contiguous());
    const int64_t points = k + 1;
    const at::Tensor owner = at::arange(n, kLong).repeat_interleave(points);
    auto make = [&](int64_t b, int64_t e) {
      std::vector<at::Tensor> rows;
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r / points, j = r % points;
        const at::Tensor xi = x.slice(0, i, i + 1);
        if (j == 0) {
          rows.push_back(xi);
          continue;
        }
        const int64_t top = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(o_.fractions[j - 1] * p)));
        at::Tensor sel = expand_selection(ranks[i].lt(top).unsqueeze(0), xi, spec);
        if (sufficiency_) sel = sel.logical_not();
        rows.push_back(at::where(sel, at::full_like(xi, o_.mask_value), xi));
      }
      return at::cat(rows);
    };
    const at::Tensor f = evaluate_rows(*in.model, in.eval, n * points, make, owner, in.targets, o_.softmax,
                                       sufficiency_ ? "sufficiency" : "comprehensiveness")
                             .view({n, points});
    return (f.select(1, 0).unsqueeze(1) - f.slice(1, 1)).mean(1);
  }

 private:
  Options o_;
  bool sufficiency_;
};

// ---- robustness ------------------------------------------------------------------------

// Max- and avg-sensitivity (Yeh et al. 2019; Quantus): inputs perturbed by uniform noise in
// [-lower_bound, lower_bound], explained again; ||a(x) - a(x')|| / ||a(x)|| (Frobenius), the
// maximum or mean over nr_samples perturbations (with return_nan_when_prediction_changes, NaN
// for a sample whose prediction any perturbation changes, as Quantus).
class Sensitivity : public Metric {
 public:
  struct Options {
    int64_t nr_samples = 200;
    double lower_bound = 0.2;
    bool return_nan_when_prediction_changes = false;
    int64_t seed = 0;
    template <class V> void visit(V& v) {
      v("nr_samples", nr_samples, "Perturbations per sample (Quantus' default 200: each is an explanation).");
      v("lower_bound", lower_bound, "Half-width of the uniform noise.");
      v("return_nan_when_prediction_changes", return_nan_when_prediction_changes,
        "NaN for a sample if any perturbation changes its prediction (Quantus' option; default: keep them all).");
      v("seed", seed, "Seed of the noise.");
    }
    void validate() const { CANDELA_CHECK(nr_samples >= 1 && lower_bound > 0, "nr_samples >= 1, lower_bound > 0."); }
  };
  Sensitivity(Options o, bool max) : o_(std::move(o)), max_(max) { o_.validate(); }
  std::string name() const override { return max_ ? "max_sensitivity" : "avg_sensitivity"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return false; }
  bool needs_explainer() const override { return true; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const at::Tensor& x = in.inputs;
    const int64_t n = x.size(0);
    const at::Tensor a = in.attributions.reshape({n, -1}).to(at::kDouble);
    const at::Tensor norm = a.norm(2, 1);
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o_.seed), 0x5e);
    at::Tensor sens = at::full({n, o_.nr_samples}, kNaN, kDouble);
    const at::Tensor predicted = detail::predict_rows(*in.model, in.eval, n, [&](int64_t b, int64_t e) { return x.slice(0, b, e); },
                                              "sensitivity");
    for (int64_t s = 0; s < o_.nr_samples; ++s) {
      const at::Tensor xp = x + (at::rand(x.sizes(), gen, kDouble) * 2 - 1).mul_(o_.lower_bound).to(x.options());
      const at::Tensor pp =
          detail::predict_rows(*in.model, in.eval, n, [&](int64_t b, int64_t e) { return xp.slice(0, b, e); }, "sensitivity");
      const at::Tensor ap = re_explain(in, *in.model, xp, in.targets).reshape({n, -1}).to(at::kDouble);
      at::Tensor v = (a - ap).norm(2, 1) / norm;
      if (o_.return_nan_when_prediction_changes) v = at::where(pp.eq(predicted), v, at::full_like(v, kNaN));
      sens.select(1, s).copy_(v);
    }
    // As Quantus (np.max / np.mean): one NaN makes the sample's score NaN.
    return max_ ? std::get<0>(sens.max(1)) : sens.mean(1);
  }

 private:
  Options o_;
  bool max_;
};

// ---- localisation ----------------------------------------------------------------------

enum class Loc { kPointing, kMass, kRank };

// Quantus' PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy (abs = false): is the
// maximum inside the mask; the share of the attribution sum inside it; the share of the top-|mask|
// features that lie inside it. NaN for an empty mask.
class Localisation : public Metric {
 public:
  struct Options {
    bool abs = false;
    template <class V> void visit(V& v) { v("abs", abs, "Use |attribution| (Quantus' default: false)."); }
    void validate() const {}
  };
  Localisation(Options o, Loc kind) : o_(o), kind_(kind) {}
  std::string name() const override {
    return kind_ == Loc::kPointing ? "pointing_game" : kind_ == Loc::kMass ? "relevance_mass_accuracy"
                                                                           : "relevance_rank_accuracy";
  }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return true; }
  bool needs_masks() const override { return true; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const FeatureMap fm = feature_map(in.attributions, in.inputs, in.model->input_spec());
    const int64_t n = fm.values.size(0), p = fm.values.size(1);
    CANDELA_CHECK(in.masks.defined(), name(), " needs ground-truth masks (--masks).");
    CANDELA_CHECK(in.masks.numel() == n * p, name(), ": the masks have ", in.masks.numel() / std::max<int64_t>(1, n),
                  " elements per sample but the attribution maps have ", p,
                  fm.image ? str_cat(" (", fm.height, "x", fm.width, " pixels)") : std::string(),
                  "; give one mask per sample of the input's height and width.");
    const at::Tensor s = in.masks.reshape({n, p}).to(at::kBool);
    at::Tensor a = fm.values;
    if (o_.abs) a = a.abs();
    const at::Tensor count = s.sum(1);
    at::Tensor out;
    if (kind_ == Loc::kPointing) {
      const at::Tensor is_max = a.eq(std::get<0>(a.max(1, true)));
      out = (is_max.logical_and(s)).any(1).to(at::kDouble);
    } else if (kind_ == Loc::kMass) {
      out = (a * s).sum(1) / a.sum(1);
    } else {
      const at::Tensor order = descending(a);
      const at::Tensor hit = s.gather(1, order).to(at::kDouble);
      const at::Tensor within = at::arange(p, kLong).unsqueeze(0).lt(count.unsqueeze(1)).to(at::kDouble);
      out = (hit * within).sum(1) / count.to(at::kDouble);
    }
    return at::where(count.eq(0), at::full_like(out, kNaN), out);
  }

 private:
  Options o_;
  Loc kind_;
};

// ---- randomisation ---------------------------------------------------------------------

at::Tensor similarity(const std::string& kind, const at::Tensor& a, const at::Tensor& b) {
  return kind == "ssim" ? ssim_rows(a, b) : kind == "pearson" ? pearson_rows(a, b) : spearman_rows(a, b);
}

// Model parameter randomisation (Adebayo et al. 2018; Quantus' MPRT, abs = true): the layers'
// parameters are replaced by random values (normal, each tensor's own std) from the output
// layer down (cascading: cumulatively; independent: one layer at a time) and the sample
// explained again; the score is the mean similarity (Spearman by default) between the original
// and the randomised maps over the layers. A method that depends on the model scores low.
class ParameterRandomisation : public Metric {
 public:
  struct Options {
    std::string mode = "cascading";
    std::string similarity = "spearman";
    std::string layer_order = "top_down";
    bool abs = true;
    int64_t seed = 42;
    template <class V> void visit(V& v) {
      v("mode", mode, "cascading (cumulative, the paper's) or independent.",
        std::vector<std::string>{"cascading", "independent"});
      v("similarity", similarity, "spearman (Quantus' default), pearson or ssim.",
        std::vector<std::string>{"spearman", "pearson", "ssim"});
      v("layer_order", layer_order, "top_down (output first) or bottom_up.",
        std::vector<std::string>{"top_down", "bottom_up"});
      v("abs", abs, "Compare |attributions| (Quantus' default).");
      v("seed", seed, "Seed of the random parameters.");
    }
    void validate() const {}
  };
  explicit ParameterRandomisation(Options o) : o_(std::move(o)) {}
  std::string name() const override { return "model_parameter_randomisation"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return false; }
  bool needs_explainer() const override { return true; }
  at::Tensor score(const MetricInput& in, nlohmann::json* details) const override {
    const torch::jit::Module* base = in.model->module();
    CANDELA_CHECK_T(UnsupportedModel, base != nullptr,
                    "model_parameter_randomisation randomises a TorchScript model's parameters; this model is a "
                    "plain function.");
    // Layers: modules that own parameters, in definition order.
    std::vector<std::string> layers;
    for (const auto& m : base->named_modules())
      if (m.value.named_parameters(/*recurse=*/false).size() > 0) layers.push_back(m.name);
    CANDELA_CHECK_T(UnsupportedModel, !layers.empty(), "the model has no parameters to randomise.");
    if (o_.layer_order == "top_down") std::reverse(layers.begin(), layers.end());
    const int64_t n = in.inputs.size(0);
    auto prep = [&](const at::Tensor& a) {
      at::Tensor m = feature_map(a, in.inputs, in.model->input_spec()).values;
      return o_.abs ? m.abs() : m;
    };
    const at::Tensor original = prep(in.attributions);
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o_.seed), 0x3a);
    torch::jit::Module current = base->clone();
    std::vector<at::Tensor> per_layer;
    nlohmann::json names = nlohmann::json::array();
    for (const auto& layer : layers) {
      torch::jit::Module model_copy = o_.mode == "cascading" ? current : base->clone();
      for (const auto& m : model_copy.named_modules()) {
        if (m.name != layer) continue;
        at::NoGradGuard ng;
        for (const auto& p : m.value.named_parameters(false)) {
          at::Tensor t = p.value;
          const double sd = t.numel() > 1 ? t.to(at::kDouble).std().item<double>() : 1.0;
          t.detach().copy_(at::randn(t.sizes(), gen, kDouble).mul_(sd > 0 ? sd : 1.0).to(t.options()));
        }
      }
      if (o_.mode == "cascading") current = model_copy;
      Model randomised = Model::from_module(o_.mode == "cascading" ? current.clone() : model_copy, in.model->input_spec());
      const at::Tensor a = prep(re_explain(in, randomised, in.inputs, in.targets));
      per_layer.push_back(similarity(o_.similarity, original, a));
      names.push_back(layer);
    }
    const at::Tensor all = at::stack(per_layer, 1);  // [n, layers]
    if (details) {
      (*details)["layers"] = names;
      (*details)["similarity_per_layer"] = detail::tensor_to_json(all);
    }
    return at::nanmean(all, 1);
    (void)n;
  }

 private:
  Options o_;
};

// Random logit (Sixt, Granz & Landgraf 2020; Quantus' RandomLogit): the similarity (SSIM) of
// the explanation of the target and of a random other class. Low is better.
class RandomLogit : public Metric {
 public:
  struct Options {
    std::string similarity = "ssim";
    int64_t seed = 42;
    template <class V> void visit(V& v) {
      v("similarity", similarity, "ssim (Quantus' default), spearman or pearson.",
        std::vector<std::string>{"ssim", "spearman", "pearson"});
      v("seed", seed, "Seed of the other class.");
    }
    void validate() const {}
  };
  explicit RandomLogit(Options o) : o_(std::move(o)) {}
  std::string name() const override { return "random_logit"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return false; }
  bool needs_explainer() const override { return true; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const int64_t n = in.inputs.size(0);
    at::Tensor out;
    {
      at::NoGradGuard ng;
      out = in.model->forward(in.inputs.slice(0, 0, 1));
    }
    const int64_t classes = out.reshape({1, -1}).size(1);
    CANDELA_CHECK(classes >= 2, "random_logit needs a model with at least 2 classes.");
    std::mt19937_64 rng(static_cast<uint64_t>(o_.seed));
    at::Tensor other = at::empty({n}, kLong);
    for (int64_t i = 0; i < n; ++i) {
      // mt19937_64's stream is the same everywhere; std::uniform_int_distribution is not.
      int64_t c = static_cast<int64_t>(rng() % static_cast<uint64_t>(classes - 1));
      if (c >= in.targets[i].item<int64_t>()) ++c;
      other[i] = c;
    }
    const at::Tensor a = feature_map(in.attributions, in.inputs, in.model->input_spec()).values;
    const at::Tensor b = feature_map(re_explain(in, *in.model, in.inputs, other), in.inputs, in.model->input_spec()).values;
    return similarity(o_.similarity, a, b);
  }

 private:
  Options o_;
};

// ---- complexity and completeness ---------------------------------------------------------

// Sparseness (Chalasani et al. 2020; Quantus): the Gini index of |a|. Entropy (Bhatt et al. 2020;
// Quantus' Complexity): the Shannon entropy of |a| / sum |a|.
class Complexity : public Metric {
 public:
  struct Options {
    template <class V> void visit(V&) {}
    void validate() const {}
  };
  Complexity(Options, bool gini) : gini_(gini) {}
  std::string name() const override { return gini_ ? "sparseness" : "entropy"; }
  nlohmann::json options() const override { return nlohmann::json::object(); }
  bool higher_is_better() const override { return gini_; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const at::Tensor a = feature_map(in.attributions, in.inputs, in.model->input_spec()).values.abs();
    const int64_t p = a.size(1);
    if (gini_) {
      const at::Tensor s = std::get<0>((a + 1e-7).sort(1));
      const at::Tensor k = at::arange(1, p + 1, kDouble).unsqueeze(0);
      return ((2 * k - p - 1) * s).sum(1) / (p * s.sum(1));
    }
    const at::Tensor q = a / a.sum(1, true);
    return -(q * at::log(q + 1e-12)).sum(1);
  }

 private:
  bool gini_;
};

// Completeness error: |sum(a) - (f_t(x) - f_t(baseline))| with the method's baseline.
class CompletenessError : public Metric {
 public:
  struct Options {
    template <class V> void visit(V&) {}
    void validate() const {}
  };
  explicit CompletenessError(Options) {}
  std::string name() const override { return "completeness_error"; }
  nlohmann::json options() const override { return nlohmann::json::object(); }
  bool higher_is_better() const override { return false; }
  at::Tensor score(const MetricInput& in, nlohmann::json* details) const override {
    const at::Tensor& x = in.inputs;
    const int64_t n = x.size(0);
    const at::Tensor ref = in.request.baseline.for_inputs(x, in.model->input_spec().layout, 0).to(x.options());
    const at::Tensor owner = at::arange(n, kLong).repeat_interleave(2);
    const at::Tensor f = evaluate_rows(
                             *in.model, in.eval, 2 * n,
                             [&](int64_t b, int64_t e) {
                               std::vector<at::Tensor> rows;
                               for (int64_t r = b; r < e; ++r) rows.push_back((r % 2 ? ref : x).slice(0, r / 2, r / 2 + 1));
                               return at::cat(rows);
                             },
                             owner, in.targets, false, "completeness_error")
                             .view({n, 2});
    const at::Tensor gap = f.select(1, 0) - f.select(1, 1);
    const at::Tensor sums = in.attributions.reshape({n, -1}).to(at::kDouble).sum(1);
    const at::Tensor err = (sums - gap).abs();
    if (details) (*details)["relative"] = detail::tensor_to_json(err / gap.abs().clamp_min(1e-12));
    return err;
  }
};

template <class M>
MetricInfo metric_info(std::string name, std::string family, std::string description, std::string reference,
                       std::function<std::unique_ptr<Metric>(typename M::Options)> make) {
  MetricInfo m;
  m.name = name;
  m.family = std::move(family);
  m.description = std::move(description);
  m.reference = std::move(reference);
  m.schema = options_schema<typename M::Options>();
  m.create = [name, make](const nlohmann::json& j) { return make(options_from_json<typename M::Options>(j, name)); };
  auto probe = make(typename M::Options{});
  m.needs_masks = probe->needs_masks();
  m.needs_explainer = probe->needs_explainer();
  return m;
}

}  // namespace

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
    using DI = DeletionInsertion;
    r.add(metric_info<DI>("deletion", "faithfulness",
                          "Area under the class probability as the most important pixels are deleted (lower is better).",
                          "Petsiuk, Das & Saenko 2018, RISE",
                          [](DI::Options o) { return std::make_unique<DI>(o, false); }));
    r.add(metric_info<DI>("insertion", "faithfulness",
                          "Area under the class probability as the most important pixels are inserted into a blurred "
                          "copy (higher is better).",
                          "Petsiuk, Das & Saenko 2018, RISE", [](DI::Options o) { return std::make_unique<DI>(o, true); }));
    r.add(metric_info<RegionPerturbation>(
        "region_perturbation", "faithfulness",
        "AOPC: mean drop of the logit as patches are perturbed in MoRF (higher is better) or LeRF order.",
        "Samek et al. 2017, Evaluating the visualization of what a deep neural network has learned (Quantus)",
        [](RegionPerturbation::Options o) { return std::make_unique<RegionPerturbation>(o); }));
    r.add(metric_info<Road>("road", "faithfulness",
                            "Share of imputation levels (noisy linear imputation of the top pixels) at which the "
                            "prediction survives (MoRF: lower is better).",
                            "Rong et al. 2022, A Consistent and Efficient Evaluation Strategy for Attribution Methods",
                            [](Road::Options o) { return std::make_unique<Road>(o); }));
    r.add(metric_info<FaithfulnessCorrelation>(
        "faithfulness_correlation", "faithfulness",
        "Pearson correlation between random subsets' attribution sums and the logit drops they cause.",
        "Bhatt, Weller & Moura 2020, Evaluating and Aggregating Feature-based Model Explanations (Quantus)",
        [](FaithfulnessCorrelation::Options o) { return std::make_unique<FaithfulnessCorrelation>(o); }));
    r.add(metric_info<Infidelity>("infidelity", "faithfulness",
                                  "Mean squared error between I . a and f(x) - f(x - I) for small Gaussian I.",
                                  "Yeh et al. 2019, On the (In)fidelity and Sensitivity of Explanations (Captum)",
                                  [](Infidelity::Options o) { return std::make_unique<Infidelity>(o); }));
    r.add(metric_info<Eraser>("comprehensiveness", "faithfulness",
                              "Probability drop when the top-k% features are removed (higher is better).",
                              "DeYoung et al. 2020, ERASER",
                              [](Eraser::Options o) { return std::make_unique<Eraser>(o, false); }));
    r.add(metric_info<Eraser>("sufficiency", "faithfulness",
                              "Probability drop when only the top-k% features are kept (lower is better).",
                              "DeYoung et al. 2020, ERASER", [](Eraser::Options o) { return std::make_unique<Eraser>(o, true); }));
    r.add(metric_info<Sensitivity>("max_sensitivity", "robustness",
                                   "Largest relative change of the explanation under small uniform input noise.",
                                   "Yeh et al. 2019 (Quantus MaxSensitivity)",
                                   [](Sensitivity::Options o) { return std::make_unique<Sensitivity>(o, true); }));
    r.add(metric_info<Sensitivity>("avg_sensitivity", "robustness",
                                   "Mean relative change of the explanation under small uniform input noise.",
                                   "Yeh et al. 2019 (Quantus AvgSensitivity)",
                                   [](Sensitivity::Options o) { return std::make_unique<Sensitivity>(o, false); }));
    r.add(metric_info<Localisation>("pointing_game", "localisation", "Does the maximum of the map fall inside the mask?",
                                    "Zhang et al. 2018, Top-down Neural Attention by Excitation Backprop (Quantus)",
                                    [](Localisation::Options o) { return std::make_unique<Localisation>(o, Loc::kPointing); }));
    r.add(metric_info<Localisation>("relevance_mass_accuracy", "localisation",
                                    "Share of the attribution sum inside the mask.",
                                    "Arras, Osman & Samek 2022, CLEVR-XAI (Quantus)",
                                    [](Localisation::Options o) { return std::make_unique<Localisation>(o, Loc::kMass); }));
    r.add(metric_info<Localisation>("relevance_rank_accuracy", "localisation",
                                    "Share of the top-|mask| features that lie inside the mask.",
                                    "Arras, Osman & Samek 2022, CLEVR-XAI (Quantus)",
                                    [](Localisation::Options o) { return std::make_unique<Localisation>(o, Loc::kRank); }));
    r.add(metric_info<ParameterRandomisation>(
        "model_parameter_randomisation", "randomisation",
        "Similarity of the explanation to itself after randomising layers (lower: the method depends on the model).",
        "Adebayo et al. 2018, Sanity Checks for Saliency Maps (Quantus MPRT)",
        [](ParameterRandomisation::Options o) { return std::make_unique<ParameterRandomisation>(o); }));
    r.add(metric_info<RandomLogit>("random_logit", "randomisation",
                                   "Similarity of the explanations of the target and of a random other class "
                                   "(lower is better).",
                                   "Sixt, Granz & Landgraf 2020, When Explanations Lie (Quantus)",
                                   [](RandomLogit::Options o) { return std::make_unique<RandomLogit>(o); }));
    r.add(metric_info<Complexity>("sparseness", "complexity", "Gini index of |attributions| (higher: sparser).",
                                  "Chalasani et al. 2020, Concise Explanations of Neural Networks (Quantus)",
                                  [](Complexity::Options o) { return std::make_unique<Complexity>(o, true); }));
    r.add(metric_info<Complexity>("entropy", "complexity",
                                  "Shannon entropy of |attributions| normalised to sum 1 (lower: simpler).",
                                  "Bhatt, Weller & Moura 2020 (Quantus Complexity)",
                                  [](Complexity::Options o) { return std::make_unique<Complexity>(o, false); }));
    r.add(metric_info<CompletenessError>("completeness_error", "axiomatic",
                                         "|sum of attributions - (f(x) - f(baseline))| for the method's baseline.",
                                         "Sundararajan et al. 2017 (completeness); Quantus Completeness",
                                         [](CompletenessError::Options o) { return std::make_unique<CompletenessError>(o); }));
    return r;
  }();
  return registry;
}

}  // namespace candela
