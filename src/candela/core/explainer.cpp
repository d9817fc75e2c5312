#include "candela/core/explainer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/registry.h"
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
  detail::ModelGuard guard(model);
  const auto start = std::chrono::steady_clock::now();
  Evaluator evaluator(model, request.eval);
  ExplainRequest req = request;
  req.inputs = request.inputs.detach();
  Attribution a = attribute(evaluator, req);
  a.method = name();
  a.options = options();
  a.target = request.target.describe();
  if (uses_baseline()) a.baseline = request.baseline.describe();
  a.model_evaluations = evaluator.evaluations();
  if (evaluator.partial_evaluations() > 0) a.extra["partial_evaluations"] = evaluator.partial_evaluations();
  a.batch_size = evaluator.largest_batch();
  check_result(a);
  a.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return a;
}

}  // namespace candela
