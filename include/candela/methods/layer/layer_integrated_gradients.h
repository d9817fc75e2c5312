// Layer Integrated Gradients (Captum's LayerIntegratedGradients; Sundararajan, Taly & Yan 2017,
// "Axiomatic Attribution for Deep Networks", in a layer's output space). Definition:
// a = (h(x) - h(b)) * sum_k w_k d f_t / d h at h(b) + alpha_k (h(x) - h(b)), the straight path
// in layer space, while the rest of the network (skip connections) sees the input x.
// Completeness: sum(a) = f_t(x) - f_t(b) up to the reported convergence delta.
//
// The path points re-run only the network after the layer (LayerTaps suffix execution) when
// the graph can be cut there; otherwise each point is a full forward pass with the layer's
// output replaced, as Captum's hook does. extra.suffix_execution says which ran (and
// extra.suffix_execution_reason why not). Quadratures as in integrated_gradients.h (Candela's
// riemann_trapezoid is Captum's times n/(n-1)).
#pragma once

#include "candela/core/method.h"
#include "candela/methods/gradient/integrated_gradients.h"

#include <string>
#include <vector>

namespace candela {

struct LayerIntegratedGradientsOptions {
  std::vector<std::string> layers;
  int64_t n_steps = 50;
  std::string method = "gausslegendre";
  int64_t internal_batch_size = 0;
  bool multiply_by_inputs = true;
  template <class V> void visit(V& v) {
    v("layers", layers, "The one layer to explain, by dotted module path (`candela info MODEL` lists them).");
    visit_path_options(v, *this,
                       "Multiply the path-integrated layer gradient by h(x) - h(baseline) (false: the local attribution). The "
                       "convergence delta is always that of the global attribution.");
  }
  void validate() const;
};

class LayerIntegratedGradients : public Method<LayerIntegratedGradients, LayerIntegratedGradientsOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "layer_integrated_gradients",
      .family = "layer",
      .description = "Integrated gradients in a layer's output space, on the straight path from the baseline's "
                     "activation to the input's; sums to f(x) - f(baseline).",
      .reference = "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks",
      .uses_baseline = true,
      .completeness = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
