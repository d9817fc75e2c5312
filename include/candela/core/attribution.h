// Attribution: the one result type every method returns.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace candela {

struct Attribution {
  at::Tensor values;             // same shape as the inputs (but see `layer` and `spatial_map`)
  at::Tensor output;             // model output at the inputs [N, ...] (detached)
  std::vector<int64_t> targets;  // class explained per sample (empty for function targets)
  std::string target;            // how the target was given, e.g. "top1"
  at::Tensor convergence_delta;  // [N] sum(values) - (f(x) - f(baseline)); undefined if n/a
  at::Tensor output_change;      // [N] the f(x) - f(baseline) that convergence_delta is measured against
  std::string method;
  std::string layer;             // non-empty: values are over this layer's output [N, ...layer]
  bool spatial_map = false;      // values are a map [N, 1, H, W] over the input's spatial grid (CAMs)
  nlohmann::json options;        // every option, defaults included
  std::string baseline;          // description, "" if the method uses none
  int64_t model_evaluations = 0; // rows passed through the model (forward or forward+backward)
  int64_t batch_size = 0;        // largest batch the evaluator used
  double wall_seconds = 0.0;
  nlohmann::json extra = nlohmann::json::object();  // method-specific facts
  // Caveats about results that would mislead if read at face value (a constant map, a large
  // convergence delta, a poor surrogate fit, ...): [{"code", "message", "values"}].
  nlohmann::json warnings = nlohmann::json::array();

  void warn(const std::string& code, const std::string& message, nlohmann::json values = nlohmann::json::object());

  // Everything except the values, as JSON (what `attribution.json` holds).
  nlohmann::json metadata() const;
};

}  // namespace candela
