// Layer conductance (Captum's LayerConductance; Dhamdhere, Sundararajan & Yan 2018, "How
// Important Is a Neuron?"). Definition, over the n_steps + 1 quadrature nodes alpha_0..alpha_n
// and inputs x_k = b + alpha_k (x - b): a = sum_{k<n} d f_t(x_k) / d h * (h(x_{k+1}) - h(x_k)).
// It sums to about f_t(x) - f_t(b) (exactly f_t(x_n) - f_t(x_0) in the limit); the convergence
// delta sum(a) - (f_t(x) - f_t(b)) is reported.
#pragma once

#include "candela/core/method.h"
#include "candela/methods/gradient/integrated_gradients.h"

#include <string>
#include <vector>

namespace candela {

struct LayerConductanceOptions {
  std::vector<std::string> layers;
  int64_t n_steps = 50;
  std::string method = "gausslegendre";
  int64_t internal_batch_size = 0;
  template <class V> void visit(V& v) {
    v("layers", layers, "The one layer to explain, by dotted module path (`candela info MODEL` lists them).");
    v("n_steps", n_steps, "Number of steps along the path (n_steps + 1 inputs are evaluated).");
    v("method", method, "Where the n_steps + 1 path points lie: gausslegendre nodes or a riemann rule's.",
      quadrature_names());
    v("internal_batch_size", internal_batch_size,
      "Largest number of path points per model call (0: chosen by the evaluator within --max-memory).");
  }
  void validate() const;
};

class LayerConductance : public Method<LayerConductance, LayerConductanceOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "layer_conductance",
      .family = "layer",
      .description = "Conductance of each neuron of a layer: its gradient times its change along the input path from "
                     "the baseline; sums to f(x) - f(baseline).",
      .reference = "Dhamdhere, Sundararajan & Yan 2018, How Important Is a Neuron?",
      .uses_baseline = true,
      .completeness = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
