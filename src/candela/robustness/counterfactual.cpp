#include "candela/robustness/counterfactual.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cmath>
#include <set>

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/model_guard.h"
#include "candela/detail/tensor_util.h"
#include "candela/detail/text.h"
#include "candela/robustness/attacks.h"

namespace candela {

void CounterfactualOptions::validate() const {
  CANDELA_CHECK(method == "dice" || method == "wachter", "method must be dice or wachter, got '", method, "'.");
  CANDELA_CHECK(count >= 1 && count <= 1000, "count (counterfactuals per row) must be in [1, 1000], got ", count, ".");
  CANDELA_CHECK(proximity_weight >= 0 && diversity_weight >= 0 && categorical_penalty >= 0,
                "proximity_weight, diversity_weight and categorical_penalty must be >= 0.");
  CANDELA_CHECK(learning_rate > 0 && wachter_learning_rate > 0, "learning rates must be > 0.");
  CANDELA_CHECK(min_iter >= 0 && max_iter >= 1 && min_iter <= max_iter, "need 0 <= min_iter <= max_iter and max_iter >= 1, got ",
                min_iter, " and ", max_iter, ".");
  CANDELA_CHECK(loss_diff_thres >= 0, "loss_diff_thres must be >= 0.");
  CANDELA_CHECK(posthoc_sparsity_param >= 0 && posthoc_sparsity_param < 1, "posthoc_sparsity_param must be in [0, 1), got ",
                posthoc_sparsity_param, ".");
  CANDELA_CHECK(target_proba > 0 && target_proba <= 1 && tol >= 0 && tol < 1, "need target_proba in (0, 1] and tol in [0, 1).");
  CANDELA_CHECK(lam_init > 0 && max_lam_steps >= 1 && wachter_max_iter >= 1 && early_stop >= 1,
                "need lam_init > 0, max_lam_steps >= 1, wachter_max_iter >= 1, early_stop >= 1.");
}

// ---- constraints ---------------------------------------------------------------------------

FeatureConstraints FeatureConstraints::from_json(const nlohmann::json& j, const std::vector<std::string>& names,
                                                 int64_t features) {
  CANDELA_CHECK(j.is_object(), "the constraints must be a JSON object with keys immutable, ranges, integer, "
                               "categorical, monotone; got ", j.dump(), ".");
  detail::check_known_keys(j, {"immutable", "ranges", "integer", "categorical", "monotone"}, "key", "in the constraints");
  auto feature = [&](const nlohmann::json& f) -> int64_t {
    if (f.is_number_integer()) {
      const int64_t i = f.get<int64_t>();
      CANDELA_CHECK(i >= 0 && i < features, "constraint feature index ", i, " is out of range [0, ", features, ").");
      return i;
    }
    CANDELA_CHECK(f.is_string(), "a constraint names a feature by name or index, got ", f.dump(), ".");
    const std::string name = f.get<std::string>();
    auto it = std::find(names.begin(), names.end(), name);
    CANDELA_CHECK(it != names.end(), "the constraints name an unknown feature '", name, "'.", did_you_mean(name, names),
                  names.empty() ? " Without a CSV header or feature names, give features by index." : "");
    return it - names.begin();
  };
  auto list = [&](const char* key) {
    std::vector<int64_t> out;
    if (!j.contains(key)) return out;
    CANDELA_CHECK(j[key].is_array(), "constraints '", key, "' must be a list of features, got ", j[key].dump(), ".");
    for (const auto& f : j[key]) out.push_back(feature(f));
    return out;
  };
  FeatureConstraints c;
  c.immutable = list("immutable");
  c.integer = list("integer");
  if (j.contains("categorical")) {
    CANDELA_CHECK(j["categorical"].is_array(), "constraints 'categorical' must be a list of one-hot groups [[f, ...], ...].");
    for (const auto& g : j["categorical"]) {
      CANDELA_CHECK(g.is_array() && g.size() >= 2, "a one-hot group lists its >= 2 columns, got ", g.dump(), ".");
      std::vector<int64_t> group;
      for (const auto& f : g) group.push_back(feature(f));
      c.categorical.push_back(group);
    }
  }
  if (j.contains("ranges")) {
    CANDELA_CHECK(j["ranges"].is_object(), "constraints 'ranges' must map features to [min, max].");
    for (const auto& [k, r] : j["ranges"].items()) {
      CANDELA_CHECK(r.is_array() && r.size() == 2 && r[0].is_number() && r[1].is_number() &&
                        r[0].get<double>() <= r[1].get<double>(),
                    "the range of '", k, "' must be [min, max] with min <= max, got ", r.dump(), ".");
      long long idx = 0;
      const int64_t f = detail::parse_int64(k, idx) && std::find(names.begin(), names.end(), k) == names.end()
                            ? feature(nlohmann::json(static_cast<int64_t>(idx)))
                            : feature(nlohmann::json(k));
      c.ranges.push_back({f, {r[0].get<double>(), r[1].get<double>()}});
    }
  }
  if (j.contains("monotone")) {
    CANDELA_CHECK(j["monotone"].is_object(), "constraints 'monotone' must map features to \"increase\" or \"decrease\".");
    for (const auto& [k, d] : j["monotone"].items()) {
      CANDELA_CHECK(d == "increase" || d == "decrease", "the monotone direction of '", k,
                    "' must be \"increase\" or \"decrease\", got ", d.dump(), ".");
      long long idx = 0;
      const int64_t f = detail::parse_int64(k, idx) && std::find(names.begin(), names.end(), k) == names.end()
                            ? feature(nlohmann::json(static_cast<int64_t>(idx)))
                            : feature(nlohmann::json(k));
      c.monotone.push_back({f, d == "increase" ? 1 : -1});
    }
  }
  return c;
}

nlohmann::json FeatureConstraints::to_json() const {
  nlohmann::json ranges_j = nlohmann::json::object(), mono = nlohmann::json::object();
  for (const auto& [f, r] : ranges) ranges_j[std::to_string(f)] = {r.first, r.second};
  for (const auto& [f, d] : monotone) mono[std::to_string(f)] = d > 0 ? "increase" : "decrease";
  return {{"immutable", immutable}, {"integer", integer}, {"categorical", categorical}, {"ranges", ranges_j},
          {"monotone", mono}};
}

// ---- DiCE's loss ---------------------------------------------------------------------------

namespace detail {

at::Tensor target_margin(const at::Tensor& logits, const at::Tensor& target) {
  const at::Tensor t = target.unsqueeze(-1);
  const at::Tensor ft = logits.gather(-1, t).squeeze(-1);
  const at::Tensor others = logits.scatter(-1, t, -std::numeric_limits<double>::infinity());
  return ft - std::get<0>(others.max(-1));
}

DiceTerms dice_terms(const at::Tensor& z, const at::Tensor& xz, const at::Tensor& logits, const at::Tensor& target,
                     const at::Tensor& weights, const std::vector<std::vector<int64_t>>& groups) {
  const int64_t k = z.size(1), f = z.size(2);
  DiceTerms t;
  const at::Tensor margin = target_margin(logits, target.unsqueeze(1).expand({z.size(0), k}));
  t.yloss = at::relu(1 - margin).mean(1);
  t.proximity = ((z - xz.unsqueeze(1)).abs() * weights).sum({1, 2}) / static_cast<double>(k * f);
  if (k == 1) {
    t.diversity = at::zeros({z.size(0)}, z.options());
  } else {
    const at::Tensor dist = ((z.unsqueeze(2) - z.unsqueeze(1)).abs() * weights).sum(3);  // [N, K, K]
    const at::Tensor d = 1.0 / (1.0 + dist) + 1e-4 * at::eye(k, z.options());
    t.diversity = at::linalg_det(d);
  }
  t.regularisation = at::zeros({z.size(0)}, z.options());
  for (const auto& g : groups) {
    const at::Tensor idx = at::tensor(g, at::kLong).to(z.device());
    t.regularisation = t.regularisation + (z.index_select(2, idx).sum(2) - 1).pow(2).sum(1);
  }
  return t;
}

}  // namespace detail

// ---- the search ----------------------------------------------------------------------------

namespace {

// Adam (Kingma & Ba; PyTorch's defaults betas 0.9, 0.999, eps 1e-8) on one tensor.
struct AdamState {
  at::Tensor m, v;
  int64_t t = 0;
  void step(at::Tensor& z, const at::Tensor& g, double lr) {
    if (!m.defined()) m = at::zeros_like(z), v = at::zeros_like(z);
    ++t;
    m.mul_(0.9).add_(g, 0.1);
    v.mul_(0.999).addcmul_(g, g, 0.001);
    const double c1 = 1 - std::pow(0.9, t), c2 = 1 - std::pow(0.999, t);
    z = z - lr * (m / c1) / ((v / c2).sqrt() + 1e-8);
  }
};

at::Tensor median_rows(const at::Tensor& t) { return std::get<0>(t.median(0)); }

}  // namespace

CounterfactualResult counterfactuals(const Model& model, const at::Tensor& inputs, const at::Tensor& background,
                                     const at::Tensor& target, const FeatureConstraints& c,
                                     const CounterfactualOptions& o, const EvalOptions& eval) {
  o.validate();
  const auto start = std::chrono::steady_clock::now();
  CANDELA_CHECK(inputs.dim() == 2, "counterfactuals need tabular rows [N, F], got shape ", detail::shape_str(inputs.sizes()),
                ".");
  const int64_t n = inputs.size(0), f = inputs.size(1), k = o.count;
  CANDELA_CHECK(background.dim() == 2 && background.size(1) == f && background.size(0) >= 1,
                "the background must be rows [M, ", f, "] like the inputs, got shape ",
                detail::shape_str(background.sizes()), ".");
  CANDELA_CHECK(target.dim() == 1 && target.size(0) == n, "one target class per row is needed.");
  const at::Tensor x = inputs.detach().to(at::kDouble);
  const at::Tensor bg = background.detach().to(at::kDouble);
  // Normalisation: the background's min and max, widened by a constraint's range.
  at::Tensor lo = std::get<0>(bg.min(0)), hi = std::get<0>(bg.max(0));
  at::Tensor lo_z_fixed = at::zeros({f}, at::kDouble), hi_z_fixed = at::ones({f}, at::kDouble);
  for (const auto& [i, r] : c.ranges) lo[i] = r.first, hi[i] = r.second;
  at::Tensor scale = hi - lo;
  scale = at::where(scale > 0, scale, at::ones_like(scale));
  const at::Tensor xz = (x - lo) / scale;
  const at::Tensor bgz = (bg - lo) / scale;
  at::Tensor mad = median_rows((bgz - median_rows(bgz)).abs());
  mad = at::where(mad > 0, mad, at::ones_like(mad));
  const at::Tensor weights = 1.0 / mad;
  // Per-row bounds in normalised space: [0, 1] (or the range), widened to hold the query, then
  // narrowed by monotone directions and immutability.
  at::Tensor lo_z = at::minimum(lo_z_fixed.expand({n, f}), xz), hi_z = at::maximum(hi_z_fixed.expand({n, f}), xz);
  for (const auto& [i, r] : c.ranges) {
    lo_z.select(1, i).fill_(0.0);
    hi_z.select(1, i).fill_(1.0);
  }
  for (const auto& [i, d] : c.monotone) {
    if (d > 0) lo_z.select(1, i).copy_(at::maximum(lo_z.select(1, i), xz.select(1, i)));
    else hi_z.select(1, i).copy_(at::minimum(hi_z.select(1, i), xz.select(1, i)));
  }
  at::Tensor movable = at::ones({f}, at::kDouble);
  for (int64_t i : c.immutable) {
    lo_z.select(1, i).copy_(xz.select(1, i));
    hi_z.select(1, i).copy_(xz.select(1, i));
    movable[i] = 0.0;
  }
  const at::Tensor t_all = target.to(at::kLong);

  detail::ModelGuard guard(model);
  Evaluator ev(model, eval);
  int64_t rows_evaluated = 0, iterations_total = 0;
  at::Tensor z_out = at::empty({n, k, f}, at::kDouble);
  auto forward_z = [&](const at::Tensor& z, const at::Tensor& l, const at::Tensor& s) {
    const at::Tensor raw = l + z * s;
    at::Tensor out = model.forward(raw.reshape({-1, f}).to(at::kFloat)).to(at::kDouble);
    CANDELA_CHECK(out.dim() == 2, "counterfactuals need a classifier with outputs [N, C], got ",
                  detail::shape_str(out.sizes()), ".");
    rows_evaluated += raw.numel() / f;
    return out.reshape({z.size(0), z.size(1), -1});
  };
  const int64_t per_batch = std::max<int64_t>(1, ev.batch_size(true) / k);
  ev.batched(
      "counterfactuals", n, per_batch,
      [&](int64_t b, int64_t e) {
        const int64_t m = e - b;
        const at::Tensor xb = xz.slice(0, b, e), lb = lo_z.slice(0, b, e).unsqueeze(1), hb = hi_z.slice(0, b, e).unsqueeze(1);
        const at::Tensor tb = t_all.slice(0, b, e);
        const at::Tensor step_k = at::arange(k, at::kDouble).view({1, k, 1}) * 0.01 * movable;
        auto project = [&](const at::Tensor& z) { return at::minimum(at::maximum(z, lb), hb); };
        at::Tensor z = project(xb.unsqueeze(1) + step_k);
        at::AutoGradMode grad_mode(true);
        if (o.method == "dice") {
          AdamState adam;
          double prev = std::numeric_limits<double>::infinity();
          for (int64_t it = 0; it < o.max_iter; ++it) {
            if (ev.options().cancel.cancelled()) throw Cancelled("the counterfactual search was cancelled.");
            at::Tensor zv = z.detach().requires_grad_(true);
            const at::Tensor logits = forward_z(zv, lo, scale);
            const auto terms = detail::dice_terms(zv, xb, logits, tb, weights, c.categorical);
            const at::Tensor loss = (terms.yloss + o.proximity_weight * terms.proximity - o.diversity_weight * terms.diversity +
                                     o.categorical_penalty * terms.regularisation)
                                        .sum();
            const at::Tensor g = torch::autograd::grad({loss}, {zv})[0] * movable;
            adam.step(z, g.detach(), o.learning_rate);
            z = project(z.detach());
            ++iterations_total;
            const double l = loss.item<double>() / static_cast<double>(m);
            if (it + 1 >= o.min_iter) {
              const bool all_valid = (detail::target_margin(logits.detach(), tb.unsqueeze(1).expand({m, k})) > 0).all().item<bool>();
              if (all_valid && std::abs(l - prev) < o.loss_diff_thres) break;
            }
            prev = l;
          }
        } else {
          at::Tensor lam = at::full({m, k}, o.lam_init, at::kDouble);
          at::Tensor lam_lb = at::zeros({m, k}, at::kDouble), lam_ub = at::full({m, k}, INFINITY, at::kDouble);
          at::Tensor best = z.clone(), best_dist = at::full({m, k}, INFINITY, at::kDouble);
          const at::Tensor tk = tb.unsqueeze(1).expand({m, k});
          for (int64_t ls = 0; ls < o.max_lam_steps; ++ls) {
            AdamState adam;
            at::Tensor found = at::zeros({m, k}, at::kBool);
            int64_t all_valid_run = 0;
            for (int64_t it = 0; it < o.wachter_max_iter; ++it) {
              if (ev.options().cancel.cancelled()) throw Cancelled("the counterfactual search was cancelled.");
              at::Tensor zv = z.detach().requires_grad_(true);
              const at::Tensor logits = forward_z(zv, lo, scale);
              const at::Tensor p = at::softmax(logits, -1).gather(-1, tk.unsqueeze(-1)).squeeze(-1);
              const at::Tensor dist = ((zv - xb.unsqueeze(1)).abs() * weights).sum(2);
              const at::Tensor loss = (lam * (p - o.target_proba).pow(2) + dist).sum();
              const at::Tensor g = torch::autograd::grad({loss}, {zv})[0] * movable;
              // Keep the closest counterfactual within tol seen so far (at the point just evaluated).
              const at::Tensor ok = (p.detach() - o.target_proba).abs() <= o.tol;
              const at::Tensor better = ok & (dist.detach() < best_dist);
              best = at::where(better.unsqueeze(-1), zv.detach(), best);
              best_dist = at::where(better, dist.detach(), best_dist);
              found = found | ok;
              all_valid_run = ok.all().item<bool>() ? all_valid_run + 1 : 0;
              adam.step(z, g.detach(), o.wachter_learning_rate);
              z = project(z.detach());
              ++iterations_total;
              if (all_valid_run >= o.early_stop) break;
            }
            // Found: lambda may shrink (bisect down); not found: raise it (tenfold until bounded).
            lam_ub = at::where(found, at::minimum(lam_ub, lam), lam_ub);
            lam_lb = at::where(found, lam_lb, at::maximum(lam_lb, lam));
            lam = at::where(lam_ub.isinf(), lam * 10, (lam_lb + lam_ub) / 2);
          }
          z = at::where(best_dist.isfinite().unsqueeze(-1), best, z);
        }
        z_out.slice(0, b, e).copy_(z.detach());
      },
      /*evaluations=*/false);

  // One-hot groups take their arg-max, integer features are rounded (in raw units).
  at::Tensor raw = lo + z_out * scale;
  for (const auto& g : c.categorical) {
    const at::Tensor idx = at::tensor(g, at::kLong);
    const at::Tensor part = raw.index_select(2, idx);
    at::Tensor onehot = at::zeros_like(part).scatter_(2, part.argmax(2, true), 1.0);
    raw.index_copy_(2, idx, onehot);
  }
  for (int64_t i : c.integer) raw.select(2, i).round_();
  for (int64_t i : c.immutable) raw.select(2, i).copy_(x.select(1, i).unsqueeze(1).expand({n, k}));

  auto predict_all = [&](const at::Tensor& cf) {
    at::Tensor pred = at::empty({n, k}, at::kLong);
    ev.forward(
        "counterfactual predictions", n * k,
        [&](int64_t b, int64_t e) { return Rows{cf.reshape({n * k, f}).slice(0, b, e), at::arange(b, e, at::kLong), {}}; },
        [&](int64_t b, int64_t e, const Rows&, const at::Tensor& out) { pred.view({-1}).slice(0, b, e).copy_(out.argmax(1).cpu()); });
    return pred;
  };
  // DiCE's post-hoc sparsity: undo small changes, one feature at a time, where the class stays.
  if (o.method == "dice" && o.posthoc_sparsity_param > 0) {
    const at::Tensor spread = (bg - median_rows(bg)).abs();
    const at::Tensor q = at::quantile(spread, o.posthoc_sparsity_param, 0);
    std::vector<bool> categorical(f, false);
    for (const auto& g : c.categorical)
      for (int64_t i : g) categorical[i] = true;
    for (int64_t j = 0; j < f; ++j) {
      if (categorical[j]) continue;
      const at::Tensor col = raw.select(2, j);
      const at::Tensor xj = x.select(1, j).unsqueeze(1).expand({n, k});
      const at::Tensor small = (col - xj).abs().le(q[j]) & col.ne(xj);
      if (!small.any().item<bool>()) continue;
      at::Tensor trial = raw.clone();
      trial.select(2, j).copy_(at::where(small, xj, col));
      const at::Tensor keep = small & predict_all(trial.to(at::kFloat)).eq(t_all.unsqueeze(1));
      raw.select(2, j).copy_(at::where(keep, xj, col));
    }
  }

  CounterfactualResult r;
  r.counterfactuals = raw.to(at::kFloat);
  r.targets = t_all;
  r.predictions = predict_all(r.counterfactuals);
  r.valid = r.predictions.eq(t_all.unsqueeze(1));

  // Quality per row (Mothilal et al. 2020), on what is returned (after rounding).
  const at::Tensor cz = (r.counterfactuals.to(at::kDouble) - lo) / scale;
  const at::Tensor diff = (cz - xz.unsqueeze(1)).abs();
  const at::Tensor changed = (r.counterfactuals.to(at::kDouble) - x.unsqueeze(1)).abs() > 1e-6 * (1 + x.unsqueeze(1).abs());
  const at::Tensor proximity = (diff * weights).sum(2).mean(1) / static_cast<double>(f);
  const at::Tensor sparsity = 1 - changed.to(at::kDouble).sum(2).mean(1) / static_cast<double>(f);
  const at::Tensor validity = r.valid.to(at::kDouble).mean(1);
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    double div = 0, cdiv = 0;
    int64_t pairs = 0;
    std::set<std::vector<float>> distinct;
    for (int64_t a = 0; a < k; ++a) {
      const at::Tensor ca = r.counterfactuals[i][a].contiguous();
      distinct.insert(std::vector<float>(ca.data_ptr<float>(), ca.data_ptr<float>() + f));
      for (int64_t bb = a + 1; bb < k; ++bb, ++pairs) {
        div += ((cz[i][a] - cz[i][bb]).abs() * weights).sum().item<double>() / static_cast<double>(f);
        cdiv += (r.counterfactuals[i][a] - r.counterfactuals[i][bb]).abs().gt(1e-6).to(at::kDouble).mean().item<double>();
      }
    }
    nlohmann::json cfs = nlohmann::json::array();
    for (int64_t a = 0; a < k; ++a) {
      nlohmann::json changes = nlohmann::json::object();
      for (int64_t j = 0; j < f; ++j)
        if (changed[i][a][j].item<bool>())
          changes[std::to_string(j)] = {x[i][j].item<double>(), r.counterfactuals[i][a][j].item<double>()};
      cfs.push_back({{"prediction", r.predictions[i][a].item<int64_t>()},
                     {"valid", r.valid[i][a].item<bool>()},
                     {"changes", changes}});
    }
    rows.push_back({{"index", i},
                    {"target", t_all[i].item<int64_t>()},
                    {"validity", validity[i].item<double>()},
                    {"distinct", static_cast<int64_t>(distinct.size())},
                    {"proximity", proximity[i].item<double>()},
                    {"sparsity", sparsity[i].item<double>()},
                    {"diversity", pairs ? nlohmann::json(div / pairs) : nlohmann::json(nullptr)},
                    {"count_diversity", pairs ? nlohmann::json(cdiv / pairs) : nlohmann::json(nullptr)},
                    {"counterfactuals", cfs}});
  }
  r.report = {{"method", o.method},
              {"options", options_to_json(o)},
              {"constraints", c.to_json()},
              {"mad", detail::tensor_to_json(mad * scale)},
              {"summary",
               {{"rows", n},
                {"count", k},
                {"validity", validity.mean().item<double>()},
                {"proximity", proximity.mean().item<double>()},
                {"sparsity", sparsity.mean().item<double>()}}},
              {"rows", rows},
              {"model_rows_evaluated", rows_evaluated},
              {"iterations", iterations_total},
              {"wall_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}};
  return r;
}

ImageCounterfactualResult image_counterfactuals(const Model& model, const at::Tensor& inputs, const at::Tensor& target,
                                                const ImageCounterfactualOptions& o, const EvalOptions& eval) {
  CANDELA_CHECK(o.learning_rate > 0 && o.l1_weight >= 0 && o.max_iter >= 1 && o.early_stop >= 1,
                "image counterfactuals need learning_rate > 0, l1_weight >= 0, max_iter >= 1 and early_stop >= 1.");
  const auto start = std::chrono::steady_clock::now();
  const int64_t n = inputs.size(0);
  CANDELA_CHECK(target.dim() == 1 && target.size(0) == n, "one target class per image is needed.");
  const PixelSpace px = PixelSpace::of(model, "range");
  const at::Tensor x = px.to_pixels(inputs.detach().to(at::kFloat));
  const at::Tensor t_all = target.to(at::kLong);
  detail::ModelGuard guard(model);
  Evaluator ev(model, eval);
  at::Tensor best = x.clone();
  at::Tensor found = at::zeros({n}, at::kBool);
  int64_t rows_evaluated = 0, iterations_total = 0;
  const int64_t per_batch = std::max<int64_t>(1, ev.batch_size(true));
  ev.batched(
      "image counterfactuals", n, per_batch,
      [&](int64_t b, int64_t e) {
        const int64_t m = e - b;
        const at::Tensor xb = x.slice(0, b, e), tb = t_all.slice(0, b, e);
        at::Tensor delta = at::zeros_like(xb);
        at::Tensor best_l1 = at::full({m}, INFINITY, at::kDouble);
        at::Tensor best_b = xb.clone();
        at::Tensor since_valid = at::full({m}, -1, at::kLong);
        at::AutoGradMode grad_mode(true);
        for (int64_t it = 0; it < o.max_iter; ++it) {
          if (ev.options().cancel.cancelled()) throw Cancelled("the counterfactual search was cancelled.");
          at::Tensor dv = delta.detach().requires_grad_(true);
          const at::Tensor logits = model.forward(px.to_model(xb + dv));
          CANDELA_CHECK(logits.dim() == 2 && logits.size(1) >= 2, "counterfactuals need a classifier with outputs "
                        "[N, C], got ", detail::shape_str(logits.sizes()), ".");
          rows_evaluated += m;
          const at::Tensor margin = detail::target_margin(logits.to(at::kDouble), tb);
          // Keep the closest valid point seen (the one just evaluated).
          const at::Tensor l1 = detail::sum_per_sample(dv.detach().abs()).to(at::kDouble);
          const at::Tensor ok = margin.detach() > 0;
          const at::Tensor better = ok & (l1 < best_l1);
          best_b = at::where(detail::per_row(better, xb), (xb + dv.detach()), best_b);
          best_l1 = at::where(better, l1, best_l1);
          since_valid = at::where(ok & since_valid.lt(0), at::zeros_like(since_valid), since_valid);
          if (since_valid.ge(0).all().item<bool>() && since_valid.min().item<int64_t>() >= o.early_stop) break;
          since_valid = at::where(since_valid.ge(0), since_valid + 1, since_valid);
          const at::Tensor loss = at::relu(o.kappa - margin).sum();
          const at::Tensor g = torch::autograd::grad({loss}, {dv}, {}, false, false, /*allow_unused=*/true)[0];
          at::Tensor step = g.defined() ? delta - o.learning_rate * g.detach() : delta;
          const double thr = o.learning_rate * o.l1_weight;
          step = at::sign(step) * at::clamp_min(step.abs() - thr, 0.0);  // soft threshold: the L1 proximal step
          delta = px.clipped(xb + step) - xb;
          ++iterations_total;
        }
        best.slice(0, b, e).copy_(best_b);
        found.slice(0, b, e).copy_(best_l1.isfinite());
      },
      /*evaluations=*/false);

  ImageCounterfactualResult r;
  r.counterfactuals = px.to_model(best);
  r.change = best - x;
  r.targets = t_all;
  at::Tensor pred = at::empty({n}, at::kLong);
  ev.forward(
      "counterfactual predictions", n,
      [&](int64_t b, int64_t e) { return Rows{r.counterfactuals.slice(0, b, e), at::arange(b, e, at::kLong), {}}; },
      [&](int64_t b, int64_t e, const Rows&, const at::Tensor& out) { pred.slice(0, b, e).copy_(out.argmax(1).cpu()); });
  r.predictions = pred;
  r.valid = pred.eq(t_all);
  const int64_t per = inputs.numel() / std::max<int64_t>(n, 1);
  const at::Tensor ch = r.change.reshape({n, per}).to(at::kDouble);
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    rows.push_back({{"index", i},
                    {"target", t_all[i].item<int64_t>()},
                    {"prediction", pred[i].item<int64_t>()},
                    {"valid", r.valid[i].item<bool>()},
                    {"found", found[i].item<bool>()},
                    {"proximity_l1", ch[i].abs().mean().item<double>()},
                    {"proximity_l2", ch[i].norm().item<double>()},
                    {"sparsity", 1.0 - ch[i].ne(0).to(at::kDouble).mean().item<double>()},
                    {"changed_values", ch[i].ne(0).sum().item<int64_t>()},
                    {"min", best[i].min().item<double>()},
                    {"max", best[i].max().item<double>()}});
  }
  const at::Tensor validity = r.valid.to(at::kDouble);
  r.report = {{"method", "wachter_l1_image"},
              {"options",
               {{"learning_rate", o.learning_rate}, {"l1_weight", o.l1_weight}, {"kappa", o.kappa},
                {"max_iter", o.max_iter}, {"early_stop", o.early_stop}}},
              {"pixel_range", {px.lo, px.hi}},
              {"summary",
               {{"rows", n},
                {"validity", validity.mean().item<double>()},
                {"proximity_l1", ch.abs().mean().item<double>()},
                {"sparsity", 1.0 - ch.ne(0).to(at::kDouble).mean().item<double>()}}},
              {"rows", rows},
              {"model_rows_evaluated", rows_evaluated},
              {"iterations", iterations_total},
              {"wall_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}};
  return r;
}

}  // namespace candela
