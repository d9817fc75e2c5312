#include "candela/core/explainer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>
#include <utility>
#include <vector>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/registry.h"
#include "candela/detail/forward_args.h"
#include "candela/detail/model_guard.h"
#include "candela/detail/tensor_util.h"

namespace candela {
using detail::shape_str;

void check_inputs(const Model& model, const at::Tensor& inputs) {
  CANDELA_CHECK(inputs.defined(), "no input given.");
  CANDELA_CHECK_T(ShapeMismatch, inputs.dim() >= 1 && inputs.size(0) >= 1, "inputs must be a batch [N, ...] with "
                  "N >= 1, got shape ", shape_str(inputs.sizes()), ".");
  CANDELA_CHECK(inputs.is_floating_point(), "inputs must be floating point, got ", inputs.scalar_type(),
                "; convert them (e.g. numpy .astype('float32')).");
  const auto& spec = model.input_spec().shape;
  CANDELA_CHECK_T(ShapeMismatch, spec.empty() || inputs.sizes().slice(1) == at::IntArrayRef(spec),
                  "input has per-sample shape ", shape_str(inputs.sizes().slice(1)), " but the model expects ",
                  shape_str(spec), " (from its input spec). Resize the input, or fix --input-shape / the model's "
                  ".json sidecar.");
  auto bad = at::logical_not(at::isfinite(inputs.detach()));
  if (bad.any().item<bool>()) {
    auto count = bad.sum().item<int64_t>();
    auto first = bad.reshape({-1}).nonzero()[0].item<int64_t>();
    int64_t per = inputs.numel() / inputs.size(0);
    throw InvalidArgument(detail::str_cat("the input contains ", count, " NaN or infinite value",
                                          count == 1 ? "" : "s", " (first in sample ", first / per, " at flat index ",
                                          first % per, "); replace them with finite values before explaining."));
  }
}

namespace {
// "0, 2, 5" (and "... (12 in all)" past eight).
std::string sample_list(const std::vector<int64_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < 8; ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  if (ids.size() > 8) s += ", ... (" + std::to_string(ids.size()) + " in all)";
  return s;
}

// The caveats every method's result gets checked for (methods add their own).
void check_result(Attribution& a) {
  const int64_t n = a.values.defined() && a.values.dim() > 0 ? a.values.size(0) : 0;
  if (a.output.defined()) {
    const int64_t bad = at::logical_not(at::isfinite(a.output)).sum().item<int64_t>();
    if (bad > 0)
      a.warn("non_finite_output",
             detail::str_cat("the model's output holds ", bad, " NaN or infinite value", bad == 1 ? "" : "s",
                             ": every number derived from it is meaningless. Check the model and the input's scaling."),
             {{"count", bad}});
  }
  if (n == 0) return;
  const at::Tensor v = a.values.detach().reshape({n, -1});
  const int64_t bad = at::logical_not(at::isfinite(v)).sum().item<int64_t>();
  if (bad > 0)
    a.warn("non_finite_attribution",
           detail::str_cat("the attribution holds ", bad, " NaN or infinite value", bad == 1 ? "" : "s",
                           ": the method overflowed or divided by zero (check the model's output and the options)."),
           {{"count", bad}});
  if (v.size(1) > 1) {
    const at::Tensor lo_t = std::get<0>(v.min(1)).to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor hi_t = std::get<0>(v.max(1)).to(at::kCPU, at::kDouble).contiguous();
    const auto lo = lo_t.accessor<double, 1>(), hi = hi_t.accessor<double, 1>();
    std::vector<int64_t> flat;
    std::vector<double> level;
    for (int64_t i = 0; i < n; ++i)
      if (lo[i] == hi[i]) {
        flat.push_back(i);
        level.push_back(lo[i]);
      }
    if (!flat.empty())
      a.warn("constant_attribution",
             detail::str_cat("the attribution of sample", flat.size() == 1 ? " " : "s ", sample_list(flat),
                             " is constant (every value ", level[0], "): it ranks no input feature above another. "
                             "Gradients or activations vanish there (a saturated or untrained model, a layer whose "
                             "ReLUs are all off); try another layer, target or method."),
             {{"samples", flat}, {"value", level}});
  }
  if (a.convergence_delta.defined() && a.output_change.defined()) {
    const at::Tensor d_t = a.convergence_delta.detach().to(at::kCPU, at::kDouble).reshape({-1}).contiguous();
    const at::Tensor c_t = a.output_change.detach().to(at::kCPU, at::kDouble).reshape({-1}).contiguous();
    const auto d = d_t.accessor<double, 1>(), c = c_t.accessor<double, 1>();
    std::vector<int64_t> over;
    std::vector<double> ratio;
    for (int64_t i = 0; i < d_t.numel(); ++i) {
      const double di = std::abs(d[i]), ci = std::abs(c[i]);
      if (di > 0.05 * ci + 1e-6) {
        over.push_back(i);
        ratio.push_back(ci > 0 ? di / ci : INFINITY);
      }
    }
    if (!over.empty()) {
      const double worst = *std::max_element(ratio.begin(), ratio.end());
      a.warn("convergence_delta",
             detail::str_cat("the attributions of sample", over.size() == 1 ? " " : "s ", sample_list(over),
                             " do not add up to f(x) - f(baseline): |convergence delta| is ",
                             std::isfinite(worst) ? detail::str_cat(std::round(worst * 1000) / 10, "%") : "non-zero",
                             " of it (more than 5%). Raise n_steps (or n_samples), or use integrated_gradients with "
                             "method=adaptive."),
             {{"samples", over}, {"relative_delta", ratio}, {"threshold", 0.05}});
    }
  }
}
// Explanations of samples run one at a time (forward arguments with a row per sample), as one
// result: per-sample fields concatenated; a method fact that differs between samples becomes a
// list with one entry per sample, its key named in extra.per_sample; warnings name their sample.
Attribution merge_samples(std::vector<Attribution>& parts) {
  Attribution a = parts[0];
  if (parts.size() == 1) return a;
  auto cat = [&](at::Tensor Attribution::*field) {
    std::vector<at::Tensor> all;
    for (auto& p : parts)
      if ((p.*field).defined()) all.push_back(p.*field);
    return all.size() == parts.size() ? at::cat(all) : at::Tensor();
  };
  a.values = cat(&Attribution::values);
  a.output = cat(&Attribution::output);
  a.convergence_delta = cat(&Attribution::convergence_delta);
  a.output_change = cat(&Attribution::output_change);
  a.targets.clear();
  for (auto& p : parts) a.targets.insert(a.targets.end(), p.targets.begin(), p.targets.end());
  std::set<std::string> keys;
  for (auto& p : parts)
    for (auto it = p.extra.begin(); it != p.extra.end(); ++it) keys.insert(it.key());
  nlohmann::json extra = nlohmann::json::object(), varying = nlohmann::json::array();
  for (const auto& key : keys) {
    nlohmann::json per = nlohmann::json::array();
    bool same = true;
    for (auto& p : parts) {
      per.push_back(p.extra.contains(key) ? p.extra[key] : nlohmann::json());
      same = same && per.back() == per[0];
    }
    if (same) {
      extra[key] = per[0];
    } else {
      extra[key] = per;
      varying.push_back(key);
    }
  }
  if (!varying.empty()) extra["per_sample"] = varying;
  a.extra = extra;
  a.warnings = nlohmann::json::array();
  for (size_t i = 0; i < parts.size(); ++i)
    for (auto w : parts[i].warnings) {
      w["message"] = detail::str_cat("sample ", i, ": ", w.value("message", ""));
      w["sample"] = i;
      a.warnings.push_back(w);
    }
  return a;
}
}  // namespace

Attribution Explainer::explain(const Model& model, const ExplainRequest& request) const {
  check_inputs(model, request.inputs);
  if (model.input_spec().layout == "NL" && Registry::builtin().contains(name())) {
    // Token ids are indices, not a point in a space: there is no gradient with respect to them.
    // Rule methods that read relevance at a layer (attn_lrp with layers) need no input gradient.
    const std::string& family = Registry::builtin().get(name()).family;
    const nlohmann::json opts = options();
    const bool at_layer = opts.contains("layers") && opts["layers"].is_array() && !opts["layers"].empty();
    CANDELA_CHECK((family != "gradient" && family != "propagation") || at_layer, name(),
                  " needs the gradient with respect to the input, and token ids (layout NL) have none. Explain the "
                  "embedding layer instead: layer_integrated_gradients or layer_gradient_x_activation with --layer "
                  "EMBEDDING (`candela info MODEL` lists the layers), or a perturbation method over tokens.");
  }
  if (request.target.kind() == Target::Kind::kIndices) request.target.classes(at::empty({request.inputs.size(0)}));
  // Forward arguments with a row per sample (an attention mask per sentence): the samples are
  // explained one at a time, each with its own row broadcast to every row the method makes.
  const int64_t n = request.inputs.size(0);
  const bool one_at_a_time = detail::per_sample_forward_args(model, n);
  detail::ModelGuard guard(model);
  const auto start = std::chrono::steady_clock::now();
  ExplainRequest req = request;
  req.inputs = request.inputs.detach();
  Attribution a;
  int64_t evaluations = 0, partial = 0, largest = 0, local = 0;
  auto run = [&](const Model& m, const ExplainRequest& r) {
    Evaluator evaluator(m, request.eval);
    Attribution part = attribute(evaluator, r);
    evaluations += evaluator.evaluations();
    partial += evaluator.partial_evaluations();
    local += evaluator.local_evaluations();
    largest = std::max(largest, evaluator.largest_batch());
    return part;
  };
  if (!one_at_a_time) {
    a = run(model, req);
  } else {
    std::vector<Attribution> parts;
    for (int64_t i = 0; i < n; ++i) {
      const Model one = detail::forward_args_of_samples(model, i, i + 1);
      ExplainRequest r = req;
      r.inputs = req.inputs.slice(0, i, i + 1);
      r.target = req.target.gather({i});
      r.baseline = req.baseline.for_sample(i, req.inputs);
      if (req.feature_mask.defined() && req.feature_mask.dim() == req.inputs.dim() && req.feature_mask.size(0) == n)
        r.feature_mask = req.feature_mask.slice(0, i, i + 1);
      parts.push_back(run(one, r));
    }
    a = merge_samples(parts);
  }
  a.method = name();
  a.options = options();
  a.target = request.target.describe();
  if (uses_baseline()) a.baseline = request.baseline.describe();
  a.model_evaluations = evaluations;
  if (partial > 0) a.extra["partial_evaluations"] = partial;
  if (local > 0) a.extra["local_evaluations"] = local;
  a.batch_size = largest;
  check_result(a);
  a.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return a;
}

}  // namespace candela
