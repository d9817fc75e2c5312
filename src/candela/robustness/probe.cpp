#include "candela/robustness/probe.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>

#include "candela/core/explainer.h"
#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/core/registry.h"
#include "candela/core/target.h"
#include "candela/detail/model_guard.h"
#include "candela/detail/tensor_util.h"

namespace candela {

void RobustnessOptions::validate() const {
  attack.validate();
  for (double e : eps_curve)
    CANDELA_CHECK(std::isfinite(e) && e >= 0, "eps_curve values must be finite and >= 0, got ", e, ".");
  CANDELA_CHECK(norm == "linf" || norm == "l2", "norm must be linf or l2, got '", norm, "'.");
  CANDELA_CHECK(search_steps >= 0 && search_steps <= 60, "search_steps must be in [0, 60], got ", search_steps, ".");
  CANDELA_CHECK(std::isfinite(search_max), "search_max must be finite.");
  CANDELA_CHECK(std::isfinite(fragility_eps), "fragility_eps must be finite.");
  CANDELA_CHECK(top_k > 0 && top_k <= 1, "top_k is a share of the features in (0, 1], got ", top_k, ".");
  CANDELA_CHECK(max_maps >= 0, "max_maps must be >= 0, got ", max_maps, ".");
}

namespace detail {

at::Tensor spearman_rows(const at::Tensor& a, const at::Tensor& b) {
  auto ranks = [](const at::Tensor& t) {
    const at::Tensor order = std::get<1>(t.to(at::kDouble).sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
    return at::argsort(order, /*dim=*/1, /*descending=*/false).to(at::kDouble);
  };
  at::Tensor ra = ranks(a), rb = ranks(b);
  ra = ra - ra.mean(1, true);
  rb = rb - rb.mean(1, true);
  return (ra * rb).sum(1) / (ra.norm(2, 1) * rb.norm(2, 1));
}

at::Tensor top_k_intersection(const at::Tensor& a, const at::Tensor& b, int64_t k) {
  const int64_t f = a.size(1);
  k = std::max<int64_t>(1, std::min(k, f));
  at::Tensor ma = at::zeros(a.sizes(), at::kBool), mb = at::zeros(b.sizes(), at::kBool);
  ma.scatter_(1, std::get<1>(a.abs().topk(k, 1)), true);
  mb.scatter_(1, std::get<1>(b.abs().topk(k, 1)), true);
  return (ma & mb).sum(1).to(at::kDouble) / static_cast<double>(k);
}

}  // namespace detail

namespace {

at::Tensor predict(Evaluator& ev, const at::Tensor& x, const char* stage) {
  at::Tensor pred = at::empty({x.size(0)}, at::kLong);
  ev.forward(
      stage, x.size(0), [&](int64_t b, int64_t e) { return Rows{x.slice(0, b, e), at::arange(b, e, at::kLong), {}}; },
      [&](int64_t b, int64_t e, const Rows&, const at::Tensor& out) {
        pred.slice(0, b, e).copy_(out.reshape({e - b, -1}).argmax(1).cpu());
      });
  return pred;
}

}  // namespace

RobustnessResult probe_robustness(const Model& model, const at::Tensor& inputs, const at::Tensor& labels,
                                  const RobustnessOptions& options, const EvalOptions& eval) {
  options.validate();
  const auto start = std::chrono::steady_clock::now();
  const AttackOptions att = options.attack.resolved();
  CANDELA_CHECK(inputs.dim() >= 2 && inputs.size(0) >= 1, "robustness needs a batch [N, ...] of inputs, got shape ",
                detail::shape_str(inputs.sizes()), ".");
  const at::Tensor x = inputs.detach().to(at::kFloat).contiguous();
  const int64_t n = x.size(0);
  const PixelSpace space = PixelSpace::of(model, att.clamp);
  const bool l2 = att.is_l2() || (att.attack == "deepfool" && options.norm == "l2");
  detail::ModelGuard guard(model);
  Evaluator ev(model, eval);

  RobustnessResult r;
  r.clean_pred = predict(ev, x, "clean predictions");
  if (labels.defined()) {
    CANDELA_CHECK(labels.dim() == 1 && labels.size(0) == n, "--labels must hold one class per sample (", n,
                  "), got shape ", detail::shape_str(labels.sizes()), ".");
    r.labels = labels.to(at::kLong);
  } else {
    r.labels = r.clean_pred.clone();
  }
  const at::Tensor correct = r.clean_pred.eq(r.labels);

  // The attack at the budget asked for.
  r.adversarial = adversarial_attack(ev, x, r.labels, att);
  r.adversarial_pred = predict(ev, r.adversarial, "adversarial predictions");
  r.perturbation = space.to_pixels(r.adversarial) - space.to_pixels(x);
  const at::Tensor flat = r.perturbation.flatten(1).to(at::kDouble);
  const at::Tensor linf = flat.abs().amax(1), l2n = flat.norm(2, 1);
  const at::Tensor size = l2 ? l2n : linf;
  const at::Tensor flipped = r.adversarial_pred.ne(r.labels);

  // Robust accuracy by eps.
  std::vector<double> curve_eps = options.eps_curve;
  if (curve_eps.empty()) curve_eps = {0.0, att.eps / 4, att.eps / 2, att.eps, 2 * att.eps};
  std::sort(curve_eps.begin(), curve_eps.end());
  nlohmann::json curve = nlohmann::json::array();
  at::Tensor robust = correct.clone();
  for (double e : curve_eps) {
    if (att.attack == "deepfool") {
      robust = correct & (flipped.logical_not() | size.gt(e));
    } else if (e > 0) {
      AttackOptions at_e = att;
      at_e.eps = e;
      at_e.alpha = att.eps > 0 ? att.alpha * e / att.eps : att.alpha;  // the configured attack's alpha / eps
      const at::Tensor adv = adversarial_attack(ev, x, r.labels, at_e);
      robust = robust & predict(ev, adv, "robust accuracy curve").eq(r.labels);
    }
    curve.push_back({{"eps", e}, {"robust_accuracy", robust.to(at::kDouble).mean().item<double>()}});
  }

  // Minimal flipping eps: binary search on PGD (L-inf, or L2 for pgdl2 / deepfool with norm l2).
  at::Tensor min_eps = at::full({n}, std::numeric_limits<double>::quiet_NaN(), at::kDouble);
  double search_max = options.search_max;
  const int64_t features = x[0].numel();
  if (search_max < 0) search_max = (space.hi - space.lo) * (l2 ? std::sqrt(static_cast<double>(features)) : 1.0);
  if (options.search_steps > 0) {
    AttackOptions s = att;
    s.attack = l2 ? "pgdl2" : "pgd";
    s.random_start = false;
    if (att.attack == "deepfool" || att.attack == "fgsm") s.steps = 10;
    auto flips = [&](const at::Tensor& eps) {
      const at::Tensor adv = adversarial_attack(ev, x, r.labels, s, eps, eps * (2.5 / static_cast<double>(s.steps)));
      return predict(ev, adv, "minimal eps search").ne(r.labels);
    };
    at::Tensor lo = at::zeros({n}, at::kDouble), hi = at::full({n}, search_max, at::kDouble);
    const at::Tensor found = flips(hi) | correct.logical_not();
    for (int64_t t = 0; t < options.search_steps; ++t) {
      const at::Tensor mid = (lo + hi) / 2;
      const at::Tensor f = flips(mid);
      hi = at::where(f, mid, hi);
      lo = at::where(f, lo, mid);
    }
    min_eps = at::where(found, hi, min_eps);
    min_eps.masked_fill_(correct.logical_not(), 0.0);
  }

  // Explanation fragility under a random-sign perturbation that keeps the class.
  nlohmann::json fragility = nullptr;
  at::Tensor top_k_kept, rank_corr;
  at::Tensor kept_class;
  if (!options.fragility_method.empty()) {
    const MethodInfo& info = Registry::builtin().get(options.fragility_method);
    auto explainer = info.create(nlohmann::json::object());
    const double fe = options.fragility_eps < 0 ? att.eps / 4 : options.fragility_eps;
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(att.seed), 0xf7a);
    const at::Tensor sign = at::rand(x.sizes(), gen, x.options()).lt(0.5).to(at::kFloat) * 2 - 1;
    const at::Tensor xp = space.to_model(space.clipped(space.to_pixels(x) + fe * sign));
    kept_class = predict(ev, xp, "fragility predictions").eq(r.clean_pred);
    ExplainRequest req;
    req.inputs = x;
    req.target = Target::indices(std::vector<int64_t>(r.clean_pred.data_ptr<int64_t>(),
                                                      r.clean_pred.data_ptr<int64_t>() + n));
    req.eval = eval;
    r.attribution = explainer->explain(model, req).values;
    req.inputs = xp;
    r.attribution_perturbed = explainer->explain(model, req).values;
    const at::Tensor a = r.attribution.reshape({n, -1}).to(at::kDouble);
    const at::Tensor b = r.attribution_perturbed.reshape({n, -1}).to(at::kDouble);
    const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::llround(options.top_k * a.size(1))));
    top_k_kept = detail::top_k_intersection(a, b, k).masked_fill(kept_class.logical_not(), NAN);
    rank_corr = detail::spearman_rows(a.abs(), b.abs()).masked_fill(kept_class.logical_not(), NAN);
    const at::Tensor valid = kept_class;
    fragility = {{"method", options.fragility_method},
                 {"eps", fe},
                 {"perturbation", "random sign"},
                 {"top_k", k},
                 {"rows_kept_class", valid.sum().item<int64_t>()},
                 {"mean_top_k_intersection",
                  valid.any().item<bool>() ? nlohmann::json(top_k_kept.masked_select(valid).mean().item<double>())
                                           : nlohmann::json(nullptr)},
                 {"mean_rank_correlation",
                  valid.any().item<bool>() ? nlohmann::json(rank_corr.masked_select(valid).mean().item<double>())
                                           : nlohmann::json(nullptr)}};
  }

  // The report.
  nlohmann::json rows = nlohmann::json::array();
  const at::Tensor min_eps_c = min_eps.contiguous();
  for (int64_t i = 0; i < n; ++i) {
    nlohmann::json row = {{"index", i},
                          {"label", r.labels[i].item<int64_t>()},
                          {"clean_prediction", r.clean_pred[i].item<int64_t>()},
                          {"adversarial_prediction", r.adversarial_pred[i].item<int64_t>()},
                          {"flipped", flipped[i].item<bool>()},
                          {"linf", linf[i].item<double>()},
                          {"l2", l2n[i].item<double>()}};
    const double me = min_eps_c[i].item<double>();
    if (options.search_steps > 0) row["min_eps"] = std::isfinite(me) ? nlohmann::json(me) : nlohmann::json(nullptr);
    if (top_k_kept.defined()) {
      const double tk = top_k_kept[i].item<double>(), rc = rank_corr[i].item<double>();
      row["fragility_top_k_intersection"] = std::isfinite(tk) ? nlohmann::json(tk) : nlohmann::json(nullptr);
      row["fragility_rank_correlation"] = std::isfinite(rc) ? nlohmann::json(rc) : nlohmann::json(nullptr);
    }
    rows.push_back(row);
  }
  nlohmann::json summary = {{"samples", n},
                            {"clean_accuracy", correct.to(at::kDouble).mean().item<double>()},
                            {"robust_accuracy", (correct & flipped.logical_not()).to(at::kDouble).mean().item<double>()},
                            {"attack_success_rate", correct.any().item<bool>()
                                                        ? nlohmann::json((flipped & correct).sum().item<double>() /
                                                                         correct.sum().item<double>())
                                                        : nlohmann::json(nullptr)},
                            {"mean_linf", linf.mean().item<double>()},
                            {"mean_l2", l2n.mean().item<double>()}};
  if (options.search_steps > 0) {
    const at::Tensor ok = min_eps.isfinite() & correct;
    summary["min_eps_found"] = ok.sum().item<int64_t>();
    summary["min_eps_median"] = ok.any().item<bool>() ? nlohmann::json(min_eps.masked_select(ok).median().item<double>())
                                                      : nlohmann::json(nullptr);
    summary["min_eps_norm"] = l2 ? "l2" : "linf";
    summary["min_eps_search_max"] = search_max;
  }
  nlohmann::json attack_json = options_to_json(att);
  r.report = {{"attack", attack_json},
              {"pixel_range", {space.lo, space.hi}},
              {"clipped", space.clip},
              {"labels", labels.defined() ? "given" : "top1"},
              {"summary", summary},
              {"curve", curve},
              {"fragility", fragility},
              {"samples", rows},
              {"model_evaluations", ev.evaluations()},
              {"wall_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}};
  return r;
}

}  // namespace candela
