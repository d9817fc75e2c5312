// What the metric families share (src/candela/eval/<family>.cpp): the batched scorer, selections,
// Quantus' perturbation baselines and re-explaining.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "candela/core/batching.h"
#include "candela/core/model.h"
#include "candela/core/target.h"
#include "candela/detail/tensor_util.h"
#include "candela/eval/metrics.h"

namespace candela::metric_common {
using detail::str_cat;

inline const auto kDouble = at::TensorOptions().dtype(at::kDouble);
inline const auto kLong = at::TensorOptions().dtype(at::kLong);
inline const double kNaN = std::numeric_limits<double>::quiet_NaN();

inline bool image_input(const at::Tensor& x, const InputSpec& spec) {
  return x.dim() == 4 && (spec.layout == "NCHW" || spec.layout == "NHWC");
}

// Scores of the explained classes over a stream of inputs: make(b, e) -> rows, target of row r
// is targets[owner[r]]. Logits, or softmax probabilities.
inline at::Tensor evaluate_rows(const Model& model, const EvalOptions& eval, int64_t total,
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
inline at::Tensor expand_selection(const at::Tensor& sel, const at::Tensor& x, const InputSpec& spec) {
  const int64_t n = x.size(0);
  if (!image_input(x, spec)) return sel.view(x.sizes());
  if (spec.layout == "NCHW") return sel.view({n, 1, x.size(2), x.size(3)}).expand(x.sizes());
  return sel.view({n, x.size(1), x.size(2), 1}).expand(x.sizes());
}

// Quantus' perturb_baseline: black = the sample's minimum, white = maximum, mean, zeros, uniform
// noise between them.
inline at::Tensor baseline_values(const at::Tensor& x, const std::string& kind, at::Generator& gen) {
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

inline void check_baseline_kind(const std::string& kind) {
  static const std::vector<std::string> k = {"black", "white", "mean", "zeros", "uniform"};
  CANDELA_CHECK(std::find(k.begin(), k.end(), kind) != k.end(), "perturb_baseline must be one of black, white, mean, "
                "zeros, uniform; got '", kind, "'.", did_you_mean(kind, k));
}

// Descending order of the map per sample (ties broken by index, so results are deterministic).
inline at::Tensor descending(const at::Tensor& map) { return std::get<1>(map.sort(/*stable=*/true, 1, /*descending=*/true)); }

inline at::Tensor re_explain(const MetricInput& in, const Model& model, const at::Tensor& x, const at::Tensor& targets) {
  ExplainRequest r = in.request;
  r.inputs = x;
  r.target = detail::class_target(targets);
  r.eval = in.eval;
  return in.explainer->explain(model, r).values;
}

}  // namespace candela::metric_common

namespace candela {
// One per family; MetricRegistry::builtin() calls them in this order.
void register_faithfulness_metrics(MetricRegistry& r);
void register_robustness_metrics(MetricRegistry& r);
void register_localisation_metrics(MetricRegistry& r);
void register_randomisation_metrics(MetricRegistry& r);
void register_complexity_metrics(MetricRegistry& r);
}  // namespace candela
