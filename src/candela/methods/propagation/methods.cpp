// The rule-based methods: each is a rule graph (rule_graph.h) plus what it does with the
// propagated "gradient".
#include <ATen/ATen.h>

#include <algorithm>

#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "candela/methods/cam/grad_cam.h"
#include "../gradient/common.h"
#include "candela/methods/propagation/deconvolution.h"
#include "candela/methods/propagation/deep_lift.h"
#include "candela/methods/propagation/guided_backprop.h"
#include "candela/methods/propagation/guided_grad_cam.h"
#include "candela/methods/propagation/lrp.h"
#include "candela/methods/propagation/rule_graph.h"

namespace candela {
using detail::str_cat;

namespace {

// The propagated input "gradient" of the target through a rule graph, and the output.
struct Propagated {
  at::Tensor values, output;
};
Propagated propagate(Evaluator& ev, const char* stage, const at::Tensor& x, const Target& target,
                     const std::shared_ptr<const RuleGraph>& graph, bool score_relevance = false) {
  at::Tensor values = at::empty_like(x);
  std::vector<at::Tensor> outs;
  Evaluator::Scorer scorer = [&](const at::Tensor& in, const Rows& rows) {
    at::Tensor out = graph->forward(in);
    at::Tensor s = target.scores(out, rows.sample);
    if (score_relevance) s = s * s.detach();  // d/d out = the score: R_out = f_t(x)
    return std::make_pair(s, out);
  };
  ev.gradients(stage, x.size(0), detail::slice_rows(x), scorer,
               [&](int64_t b, int64_t e, const Rows&, const at::Tensor& g, const at::Tensor& out) {
                 values.slice(0, b, e).copy_(g);
                 outs.push_back(out);
               });
  return {values, at::cat(outs)};
}

Attribution guided(Evaluator& ev, const ExplainRequest& req, RuleMethod method, const char* stage) {
  RuleSettings settings;
  settings.method = method;
  auto graph = RuleGraph::of(ev.model(), settings);
  auto p = propagate(ev, stage, req.inputs, req.target, graph);
  Attribution a;
  a.values = p.values;
  a.output = p.output;
  a.targets = req.target.classes(p.output);
  a.extra["rules"] = graph->assignments();
  return a;
}

}  // namespace

// ---- guided backprop and deconvolution ------------------------------------------------

Attribution GuidedBackprop::attribute(Evaluator& ev, const ExplainRequest& req) const {
  return guided(ev, req, RuleMethod::kGuidedBackprop, "guided_backprop");
}

Attribution Deconvolution::attribute(Evaluator& ev, const ExplainRequest& req) const {
  return guided(ev, req, RuleMethod::kDeconvolution, "deconvolution");
}

// ---- guided Grad-CAM ------------------------------------------------------------------

void GuidedGradCam::Options::validate() const {
  CANDELA_CHECK(layers.size() <= 1, "guided_grad_cam uses one layer (Captum's GuidedGradCam), got ", layers.size(),
                ".");
}
Attribution GuidedGradCam::attribute(Evaluator& ev, const ExplainRequest& req) const {
  CANDELA_CHECK(req.inputs.dim() == 4, "guided_grad_cam needs image inputs [N, C, H, W], got ",
                detail::shape_str(req.inputs.sizes()), ".");
  // Captum's LayerGradCam(relu_attributions=True) at the layer's output: the raw map.
  PlainCamOptions cam;
  cam.layers = options_.layers;
  cam.relu = true;
  cam.normalize = false;
  cam.upsample = false;
  Attribution map = GradCam(cam).attribute(ev, req);
  at::Tensor m = map.values;  // [N, 1, h, w]
  const int64_t h = req.inputs.size(2), w = req.inputs.size(3);
  m = options_.interpolate_mode == "nearest" ? at::upsample_nearest2d(m, {h, w})
                                             : at::upsample_bilinear2d(m, {h, w}, /*align_corners=*/false);
  Attribution a = guided(ev, req, RuleMethod::kGuidedBackprop, "guided_grad_cam: guided backprop");
  a.values = a.values * m.to(a.values.dtype());
  a.layer = map.layer;
  a.extra["layer"] = map.layer;
  return a;
}

// ---- DeepLIFT and DeepSHAP ------------------------------------------------------------

void DeepLiftOptions::validate() const {
  CANDELA_CHECK(rule == "rescale" || rule == "reveal_cancel", "rule must be rescale or reveal_cancel, got '", rule,
                "'.", did_you_mean(rule, {"rescale", "reveal_cancel"}));
  CANDELA_CHECK(std::isfinite(eps) && eps >= 0, "eps must be >= 0, got ", eps, ".");
}
Attribution DeepLift::attribute(Evaluator& ev, const ExplainRequest& req) const { return run(ev, req, false); }

Attribution DeepLift::run(Evaluator& ev, const ExplainRequest& req, bool shap) const {
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0);
  const std::string& layout = ev.model().input_spec().layout;
  at::Tensor refs;  // [n * m, ...], m references per input
  int64_t m = 1;
  if (shap && req.baseline.is_distribution()) {
    const at::Tensor dist = req.baseline.samples(x, layout, 0).to(x.options());
    CANDELA_CHECK(dist.size(0) >= 1, "the baseline distribution is empty.");
    m = dist.size(0);
    std::vector<int64_t> reps(dist.dim(), 1);
    reps[0] = n;
    refs = dist.repeat(reps);
  } else {
    // deep_lift_shap with any other baseline pairs each input with its own reference (as
    // gradient_shap does): DeepLIFT against it.
    CANDELA_CHECK(!req.baseline.is_distribution(),
                  "deep_lift takes one reference per input; for a baseline distribution use deep_lift_shap.");
    refs = req.baseline.for_inputs(x, layout, 0).to(x.options());
  }
  const at::Tensor xs = m > 1 ? x.repeat_interleave(m, 0) : x;
  const int64_t total = xs.size(0);

  RuleSettings settings;
  settings.method = RuleMethod::kDeepLift;
  settings.deeplift_eps = options_.eps;
  settings.reveal_cancel = options_.rule == "reveal_cancel";
  auto graph = RuleGraph::of(ev.model(), settings);

  at::Tensor mult = at::empty_like(xs);
  std::vector<at::Tensor> outs, ref_scores_all, scores_all;
  at::Tensor ref_scores;
  Evaluator::MakeRows make = [&](int64_t b, int64_t e) {
    return Rows{xs.slice(0, b, e), at::arange(b, e, at::TensorOptions().dtype(at::kLong)).div(m, "floor"),
                refs.slice(0, b, e)};
  };
  // Captum differentiates the target summed over both halves; the references' gradients feed
  // the max-pool rule, so they are kept.
  Evaluator::Scorer scorer = [&](const at::Tensor& in, const Rows& rows) {
    const int64_t k = in.size(0);
    at::Tensor out = graph->forward(at::cat({in, rows.aux.to(in.dtype())}));
    at::Tensor s_in = req.target.scores(out.slice(0, 0, k), rows.sample);
    at::Tensor s_ref = req.target.scores(out.slice(0, k, 2 * k), rows.sample);
    ref_scores = s_ref.detach();
    return std::make_pair(s_in + s_ref, out.slice(0, 0, k));
  };
  const int64_t cap = std::max<int64_t>(1, ev.batch_size(true) / 2);
  ev.gradients(name().c_str(), total, make, scorer,
               [&](int64_t b, int64_t e, const Rows& rows, const at::Tensor& g, const at::Tensor& out) {
                 mult.slice(0, b, e).copy_(g);
                 outs.push_back(out);
                 ref_scores_all.push_back(ref_scores.to(at::kDouble));
                 scores_all.push_back(req.target.scores(out, rows.sample).detach().to(at::kDouble));
               },
               cap);
  at::Tensor attr = options_.multiply_by_inputs ? (xs - refs) * mult : mult;
  at::Tensor fx = at::cat(scores_all), fref = at::cat(ref_scores_all);
  at::Tensor sums = detail::sum_per_sample(attr.to(at::kDouble));
  at::Tensor output = at::cat(outs);
  if (m > 1) {
    std::vector<int64_t> shape = {n, m};
    for (int64_t d = 1; d < attr.dim(); ++d) shape.push_back(attr.size(d));
    attr = attr.view(shape).mean(1);
    sums = sums.view({n, m}).mean(1);
    fx = fx.view({n, m}).mean(1);
    fref = fref.view({n, m}).mean(1);
    output = output.index_select(0, at::arange(n, at::TensorOptions().dtype(at::kLong).device(output.device())) * m);
  }
  Attribution a;
  a.values = attr;
  a.output = output;
  a.targets = req.target.classes(output);
  if (options_.multiply_by_inputs) {
    a.output_change = (fx - fref).to(x.dtype());
    a.convergence_delta = (sums - (fx - fref)).to(x.dtype());
  }
  a.extra["rules"] = graph->assignments();
  if (shap) a.extra["baselines"] = m;
  return a;
}

// ---- LRP ------------------------------------------------------------------------------

void LrpOptions::validate() const {
  LrpRule r;
  r.epsilon = epsilon, r.stabilizer = stabilizer, r.gamma = gamma, r.alpha = alpha, r.beta = beta;
  r.low = low, r.high = high;
  if (!rule.empty()) {
    r = LrpRule::named(rule, r);
    if (rule == "z_box" && low.empty()) r.low = r.high = {0.0};  // bounds come from the input spec later
    const auto& rows = lrp_rules();
    const auto row = std::find_if(rows.begin(), rows.end(), [&](const LrpRuleInfo& i) { return rule == i.name; });
    CANDELA_CHECK(row == rows.end() || row->for_layers, "the ", rule,
                  " rule is for activations; pick a rule for linear and convolution layers.");
    r.validate();
  } else {
    r.name = "epsilon";
    r.validate();
  }
  if (rule.empty()) resolve_composite(composite, r, /*check_only=*/true);
  CANDELA_CHECK(low.size() == high.size(), "give low and high together, with as many values each (got ", low.size(),
                " and ", high.size(), ").");
}

namespace {
// Zennit's z-box rule assumes low <= x <= high. Bounds taken from an input spec that does not
// describe the data (a .npy that is already normalised, a spec without mean/std) give wrong
// relevance without any error, so say so when the inputs leave the defaulted box.
void warn_if_box_misses_inputs(Attribution& a, const Composite& composite, const LrpRule& defaults, bool defaulted,
                               const at::Tensor& x, const InputSpec& spec) {
  if (!defaulted) return;
  const bool uses_default_box = std::any_of(composite.entries.begin(), composite.entries.end(), [&](const auto& e) {
    return e.rule.name == "z_box" && e.rule.low == defaults.low && e.rule.high == defaults.high;
  });
  if (!uses_default_box) return;
  const double low = *std::min_element(defaults.low.begin(), defaults.low.end());
  const double high = *std::max_element(defaults.high.begin(), defaults.high.end());
  const double x_min = x.min().item<double>(), x_max = x.max().item<double>();
  const double slack = 1e-4 * std::max(high - low, 1e-12);
  if (x_min >= low - slack && x_max <= high + slack) return;
  a.warn("z_box_bounds",
         str_cat("the z_box rule's bounds default to [", low, ", ", high, "] from the input spec (range [",
                 spec.range_min, ", ", spec.range_max, "]", spec.mean.empty() ? ", no mean/std" : ", with its mean/std",
                 "), but the inputs span [", x_min, ", ", x_max,
                 "]: they are scaled differently from what the spec says. Give the model's --mean/--std/--range (or "
                 "\"input\" in its .json), or the options low=...,high=...."),
         {{"low", defaults.low}, {"high", defaults.high}, {"input_min", x_min}, {"input_max", x_max}});
}
}  // namespace

RuleSettings lrp_rule_settings(const LrpOptions& options, const InputSpec& spec, LrpRule* defaults_out) {
  LrpRule defaults;
  defaults.epsilon = options.epsilon;
  defaults.stabilizer = options.stabilizer;
  defaults.gamma = options.gamma;
  defaults.alpha = options.alpha;
  defaults.beta = options.beta;
  defaults.low = options.low;
  defaults.high = options.high;
  if (defaults.low.empty()) {
    // z-box bounds from the input spec: the pixel range, normalised channel by channel.
    const size_t c = std::max(spec.mean.size(), spec.std.size());
    if (c == 0) {
      defaults.low = {spec.range_min};
      defaults.high = {spec.range_max};
    } else {
      for (size_t i = 0; i < c; ++i) {
        const double mu = spec.mean.empty() ? 0.0 : spec.mean[spec.mean.size() == 1 ? 0 : i];
        const double sd = spec.std.empty() ? 1.0 : spec.std[spec.std.size() == 1 ? 0 : i];
        defaults.low.push_back((spec.range_min - mu) / sd);
        defaults.high.push_back((spec.range_max - mu) / sd);
      }
    }
  }
  RuleSettings settings;
  settings.method = RuleMethod::kLrp;
  if (!options.rule.empty()) {
    LrpRule r = defaults;
    r.name = options.rule;
    settings.composite = Composite::uniform(r);
  } else {
    settings.composite = resolve_composite(options.composite, defaults);
  }
  if (defaults_out) *defaults_out = defaults;
  return settings;
}

Attribution Lrp::attribute(Evaluator& ev, const ExplainRequest& req) const {
  LrpRule defaults;
  RuleSettings settings = lrp_rule_settings(options_, ev.model().input_spec(), &defaults);
  auto graph = RuleGraph::of(ev.model(), settings);
  const bool score = options_.output_relevance == "score";
  auto p = propagate(ev, "lrp", req.inputs, req.target, graph, score);
  Attribution a;
  a.values = p.values;
  a.output = p.output;
  a.targets = req.target.classes(p.output);
  const at::Tensor in_sum = detail::sum_per_sample(p.values.to(at::kDouble));
  const at::Tensor idx = at::arange(req.inputs.size(0), at::TensorOptions().dtype(at::kLong));
  const at::Tensor out_rel =
      score ? req.target.scores(p.output, idx).detach().to(at::kDouble) : at::ones_like(in_sum);
  a.extra["relevance"] = {{"output", detail::tensor_to_json(out_rel)},
                          {"input", detail::tensor_to_json(in_sum)},
                          {"ratio", detail::tensor_to_json(in_sum / out_rel)}};
  a.extra["composite"] = settings.composite.to_json();
  a.extra["rules"] = graph->assignments();
  warn_if_box_misses_inputs(a, settings.composite, defaults, options_.low.empty(), req.inputs, ev.model().input_spec());
  return a;
}

}  // namespace candela
