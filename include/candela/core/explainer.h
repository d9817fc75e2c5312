// Explainer: the interface of every attribution method. Settings go to the constructor (an
// options struct with defaults); data goes to explain(). Captum's split, without its
// union-typed arguments.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "candela/core/attribution.h"
#include "candela/core/baseline.h"
#include "candela/core/batching.h"
#include "candela/core/target.h"

namespace candela {

class Model;

struct ExplainRequest {
  at::Tensor inputs;                     // [N, ...] in the model's input space
  Target target = Target::top1();
  Baseline baseline = Baseline::zeros();
  // Groups of input elements that perturbation methods treat as one feature: int64 ids
  // 0..G-1, shaped like one input [...] or like the inputs [N, ...]. Undefined: each
  // element (tabular) or the method's default segmentation (images).
  at::Tensor feature_mask;
  EvalOptions eval;
};

class Explainer {
 public:
  virtual ~Explainer() = default;
  virtual std::string name() const = 0;
  virtual nlohmann::json options() const = 0;
  virtual bool uses_baseline() const { return false; }  // reads request.baseline

  // Checks the inputs (shape against the model's spec, finite values), runs the method,
  // and fills the common fields of the result (method, options, counts, wall time).
  // The model is left as it was, also when an exception flies.
  Attribution explain(const Model& model, const ExplainRequest& request) const;

  // For wrappers (noise tunnel): runs the method with an evaluator the caller owns.
  virtual Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const = 0;
};

// Checks inputs against the model's input spec; throws ShapeMismatch / InvalidArgument.
void check_inputs(const Model& model, const at::Tensor& inputs);

}  // namespace candela
