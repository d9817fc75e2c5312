// Attribution: what an explanation returns (core/attribution.h).
#include "candela/core/attribution.h"


#include <ATen/ATen.h>

#include "candela/detail/tensor_util.h"

namespace candela {

void Attribution::warn(const std::string& code, const std::string& message, nlohmann::json values) {
  warnings.push_back({{"code", code}, {"message", message}, {"values", std::move(values)}});
}

nlohmann::json Attribution::metadata() const {
  nlohmann::json j;
  j["method"] = method;
  if (!layer.empty()) j["layer"] = layer;
  if (spatial_map) j["spatial_map"] = true;
  j["options"] = options;
  j["target"] = target;
  j["targets"] = targets;
  if (!baseline.empty()) j["baseline"] = baseline;
  if (values.defined()) j["shape"] = std::vector<int64_t>(values.sizes().begin(), values.sizes().end());
  j["output"] = detail::tensor_to_json(output);
  if (output.defined() && output.dim() == 2 && output.size(1) > 1)
    j["predicted"] = detail::tensor_to_json(output.argmax(1));
  j["convergence_delta"] = detail::tensor_to_json(convergence_delta);
  if (output_change.defined()) j["output_change"] = detail::tensor_to_json(output_change);
  j["warnings"] = warnings;
  j["model_evaluations"] = model_evaluations;
  j["batch_size"] = batch_size;
  j["wall_seconds"] = wall_seconds;
  j["extra"] = extra;
  return j;
}

}  // namespace candela
