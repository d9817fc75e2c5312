#include "candela/core/explainer.h"

#include <ATen/ATen.h>

#include <chrono>

#include "candela/core/error.h"
#include "candela/core/model.h"
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

Attribution Explainer::explain(const Model& model, const ExplainRequest& request) const {
  check_inputs(model, request.inputs);
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
  a.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return a;
}

}  // namespace candela
