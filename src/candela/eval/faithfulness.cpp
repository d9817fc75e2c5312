// Faithfulness metrics: deletion/insertion, region perturbation (AOPC), ROAD, faithfulness correlation,
// infidelity, ERASER comprehensiveness and sufficiency.
#include "metric_common.h"

namespace candela {
namespace {
using namespace metric_common;

// Deletion and insertion (Petsiuk, Das & Saenko 2018, RISE): pixels in order of importance are
// removed (set to the substrate: black) or inserted (into a blurred copy), n_steps steps; the
// score is the area under the target-probability curve (lower is better for deletion).
struct DeletionInsertionOptions {
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

template <class Derived>
class DeletionInsertion : public MetricWith<Derived, DeletionInsertionOptions> {
  using Base = MetricWith<Derived, DeletionInsertionOptions>;
  using Base::o_;

 public:
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
                                           Derived::kTraits.name)
                                 .view({n, points});
    if (details) (*details)["curve"] = detail::tensor_to_json(curve);
    // RISE's auc(): trapezoid over [0, 1].
    return (curve.sum(1) - curve.select(1, 0) / 2 - curve.select(1, points - 1) / 2) / (points - 1);
  }

 protected:
  DeletionInsertion(DeletionInsertionOptions o, bool insertion) : Base(std::move(o)), insertion_(insertion) {
    if (o_.substrate.empty()) o_.substrate = insertion_ ? "blur:5" : "zeros";
    Baseline::parse(o_.substrate);
  }

 private:
  bool insertion_;
};

class Deletion : public DeletionInsertion<Deletion> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "deletion",
      .family = "faithfulness",
      .description = "Area under the class probability as the most important pixels are deleted (lower is better).",
      .reference = "Petsiuk, Das & Saenko 2018, RISE",
      .higher_is_better = false};
  explicit Deletion(Options o = {}) : DeletionInsertion(std::move(o), /*insertion=*/false) {}
};

class Insertion : public DeletionInsertion<Insertion> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "insertion",
      .family = "faithfulness",
      .description = "Area under the class probability as the most important pixels are inserted into a blurred "
                     "copy (higher is better).",
      .reference = "Petsiuk, Das & Saenko 2018, RISE",
      .higher_is_better = true};
  explicit Insertion(Options o = {}) : DeletionInsertion(std::move(o), /*insertion=*/true) {}
};

// Region perturbation (Samek et al. 2017; Quantus' RegionPerturbation): patches in MoRF
// (most relevant first), LeRF or random order are replaced by the baseline one after another;
// the curve is f(x) - f(x_k) (probabilities, Quantus' default; logits with softmax = false) and
// the score AOPC, its mean over the regions_evaluation steps. The "mean" baseline is the
// original sample's mean (Quantus recomputes it from the partly perturbed image at each step).
struct RegionPerturbationOptions {
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

class RegionPerturbation : public MetricWith<RegionPerturbation, RegionPerturbationOptions> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "region_perturbation",
      .family = "faithfulness",
      .description = "AOPC: mean drop of the logit as patches are perturbed in MoRF (higher is better) or LeRF order.",
      .reference = "Samek et al. 2017, Evaluating the visualization of what a deep neural network has learned "
                   "(Quantus)",
      .higher_is_better = true};  // with the default order, morf
  using MetricWith::MetricWith;
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

struct RoadOptions {
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

class Road : public MetricWith<Road, RoadOptions> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "road",
      .family = "faithfulness",
      .description = "Share of imputation levels (noisy linear imputation of the top pixels) at which the "
                     "prediction survives (MoRF: lower is better).",
      .reference = "Rong et al. 2022, A Consistent and Efficient Evaluation Strategy for Attribution Methods",
      .higher_is_better = false};  // with the default order, morf
  explicit Road(Options o = {}) : MetricWith(std::move(o)) {
    if (o_.percentages.empty())
      for (int p = 1; p < 100; p += 2) o_.percentages.push_back(p);
  }
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
};

// Faithfulness correlation (Bhatt, Weller & Moura 2020; Quantus): Pearson correlation, over
// nr_runs random subsets of subset_size features set to the baseline, between the subset's
// attribution sum and the drop in the target's logit.
struct FaithfulnessCorrelationOptions {
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

class FaithfulnessCorrelation : public MetricWith<FaithfulnessCorrelation, FaithfulnessCorrelationOptions> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "faithfulness_correlation",
      .family = "faithfulness",
      .description = "Pearson correlation between random subsets' attribution sums and the logit drops they cause.",
      .reference = "Bhatt, Weller & Moura 2020, Evaluating and Aggregating Feature-based Model Explanations (Quantus)",
      .higher_is_better = true};
  using MetricWith::MetricWith;
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
};

// Infidelity (Yeh et al. 2019; Captum's infidelity): E_I[(I . a - (f(x) - f(x - I)))^2] with
// Gaussian perturbations I (Captum's documented perturb_func, std 0.003).
struct InfidelityOptions {
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
  void validate() const {
    CANDELA_CHECK(n_perturb_samples >= 1 && noise_std > 0, "n_perturb_samples >= 1, noise_std > 0.");
  }
};

class Infidelity : public MetricWith<Infidelity, InfidelityOptions> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "infidelity",
      .family = "faithfulness",
      .description = "Mean squared error between I . a and f(x) - f(x - I) for small Gaussian I.",
      .reference = "Yeh et al. 2019, On the (In)fidelity and Sensitivity of Explanations (Captum)",
      .higher_is_better = false};
  using MetricWith::MetricWith;
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
};

// Comprehensiveness and sufficiency (DeYoung et al. 2020, ERASER): for the top-k% features
// (k in 1, 5, 10, 20, 50), p(x) - p(x without them) and p(x) - p(only them); the mean over k.
// Token ids (layout NL): a position that already holds mask_value (the padding, when mask_value
// is the [PAD] id) is no token of the sample: it ranks last and k% counts the other tokens, as
// ERASER's k% of the document's tokens; otherwise padded samples would spend their top-k on
// padding whose removal changes nothing.
struct EraserOptions {
  std::vector<double> fractions = {0.01, 0.05, 0.1, 0.2, 0.5};
  double mask_value = 0.0;
  bool softmax = true;
  template <class V> void visit(V& v) {
    v("fractions", fractions, "Fractions of features kept or removed (ERASER's bins).");
    v("mask_value", mask_value,
      "Value of a removed feature (e.g. the [PAD] id; token positions already holding it are padding, not tokens).");
    v("softmax", softmax, "Score the class probability (ERASER) instead of the logit.");
  }
  void validate() const {
    for (double f : fractions) CANDELA_CHECK(f > 0 && f <= 1, "fractions must be in (0, 1], got ", f, ".");
  }
};

template <class Derived>
class Eraser : public MetricWith<Derived, EraserOptions> {
  using Base = MetricWith<Derived, EraserOptions>;
  using Base::o_;

 public:
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const InputSpec& spec = in.model->input_spec();
    const at::Tensor& x = in.inputs;
    const FeatureMap fm = feature_map(in.attributions, x, spec);
    const int64_t n = x.size(0), p = fm.values.size(1), k = static_cast<int64_t>(o_.fractions.size());
    at::Tensor values = fm.values;
    at::Tensor features = at::full({n}, p, kLong);  // per sample: the features k% counts
    if (spec.layout == "NL" && x.dim() == 2) {
      const at::Tensor padding = x.to(at::kCPU, at::kDouble).eq(o_.mask_value);
      values = values.masked_fill(padding, -std::numeric_limits<double>::infinity());
      features = padding.logical_not().sum(1);
    }
    const at::Tensor order = descending(values);
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
        const double count = static_cast<double>(features[i].item<int64_t>());
        const int64_t top = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(o_.fractions[j - 1] * count)));
        at::Tensor sel = expand_selection(ranks[i].lt(top).unsqueeze(0), xi, spec);
        if (sufficiency_) sel = sel.logical_not();
        rows.push_back(at::where(sel, at::full_like(xi, o_.mask_value), xi));
      }
      return at::cat(rows);
    };
    const at::Tensor f = evaluate_rows(*in.model, in.eval, n * points, make, owner, in.targets, o_.softmax,
                                       Derived::kTraits.name)
                             .view({n, points});
    return (f.select(1, 0).unsqueeze(1) - f.slice(1, 1)).mean(1);
  }

 protected:
  Eraser(EraserOptions o, bool sufficiency) : Base(std::move(o)), sufficiency_(sufficiency) {}

 private:
  bool sufficiency_;
};

class Comprehensiveness : public Eraser<Comprehensiveness> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "comprehensiveness",
      .family = "faithfulness",
      .description = "Probability drop when the top-k% features are removed (higher is better).",
      .reference = "DeYoung et al. 2020, ERASER",
      .higher_is_better = true};
  explicit Comprehensiveness(Options o = {}) : Eraser(std::move(o), /*sufficiency=*/false) {}
};

class Sufficiency : public Eraser<Sufficiency> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "sufficiency",
      .family = "faithfulness",
      .description = "Probability drop when only the top-k% features are kept (lower is better).",
      .reference = "DeYoung et al. 2020, ERASER",
      .higher_is_better = false};
  explicit Sufficiency(Options o = {}) : Eraser(std::move(o), /*sufficiency=*/true) {}
};

}  // namespace

void register_faithfulness_metrics(MetricRegistry& r) {
  r.add<Deletion>();
  r.add<Insertion>();
  r.add<RegionPerturbation>();
  r.add<Road>();
  r.add<FaithfulnessCorrelation>();
  r.add<Infidelity>();
  r.add<Comprehensiveness>();
  r.add<Sufficiency>();
}

}  // namespace candela
