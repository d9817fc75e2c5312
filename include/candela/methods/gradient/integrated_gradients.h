// Integrated Gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks").
// Definition: a_i = (x_i - b_i) * \int_0^1 d f_t(b + a (x - b)) / d x_i da, approximated by
// a quadrature sum_k w_k grad(b + a_k (x - b)). Completeness: sum_i a_i = f_t(x) - f_t(b);
// the result always reports the convergence delta sum_i a_i - (f_t(x) - f_t(b)).
//
// Quadratures (Captum's names and defaults): gausslegendre, riemann_left, riemann_right,
// riemann_middle, riemann_trapezoid. Candela's riemann_trapezoid is the composite trapezoid
// rule (n_steps nodes at i/(n-1), weights summing to 1); Captum's uses weights 1/n halved at
// the ends, which sum to (n-1)/n, so its results are Candela's times (n-1)/n.
//
// Beyond Captum, method = "adaptive" reaches a requested completeness error with few
// evaluations: the composite trapezoid rule on a partition of the path, refined where it is
// needed (trapezoid beats Simpson here: a ReLU network's gradient is piecewise constant
// along the path, and each split costs one evaluation instead of two). On each
// piece [a,b] of the path the exact value of the projected integral is known,
// f(b) - f(a) (both come from the same forward passes as the gradients), so each piece's
// error is measured exactly, not estimated, and their sum is the convergence delta. While
// |delta| exceeds `tolerance * |f(x) - f(b)|`, the largest-error pieces (together half of
// the summed |error|) are halved: 1 new evaluation each, every earlier one reused, so path
// points gather at the kinks of a ReLU network. The tolerance is therefore met exactly,
// unless `max_steps` runs out (then extra.converged is false).
#pragma once

#include "candela/core/method.h"

#include <vector>

namespace candela {

// The fixed quadratures of every path method: gausslegendre and the four Riemann rules.
std::vector<std::string> quadrature_names();
// Checks shared by the path methods (IG, layer and neuron IG, conductance); `method` names
// the method in the message. A Riemann rule needs `riemann_min_steps` nodes.
void check_path_options(const char* method, int64_t n_steps, const std::string& quadrature, int64_t internal_batch_size,
                        int64_t riemann_min_steps = 2);

// The options of the fixed-quadrature path methods (layer and neuron IG), visited in one place;
// `multiply_description` says what multiply_by_inputs multiplies by in that method.
template <class V, class O>
void visit_path_options(V& v, O& o, const char* multiply_description) {
  v("n_steps", o.n_steps, "Number of points on the path (quadrature nodes).");
  v("method", o.method, "Quadrature: gausslegendre or riemann_left/right/middle/trapezoid.", quadrature_names());
  v("internal_batch_size", o.internal_batch_size,
    "Largest number of path points per model call (0: chosen by the evaluator within --max-memory).");
  v("multiply_by_inputs", o.multiply_by_inputs, multiply_description);
}

struct IntegratedGradientsOptions {
  int64_t n_steps = 50;
  std::string method = "gausslegendre";
  int64_t internal_batch_size = 0;
  bool multiply_by_inputs = true;
  double tolerance = 0.01;
  int64_t max_steps = 1024;
  template <class V> void visit(V& v) {
    v("n_steps", n_steps, "Number of points on the path (quadrature nodes).");
    v("method", method, "Quadrature: gausslegendre, riemann_left/right/middle/trapezoid, or adaptive.",
      [] {
        auto names = quadrature_names();
        names.push_back("adaptive");
        return names;
      }());
    v("internal_batch_size", internal_batch_size,
      "Largest number of path points per model call (0: chosen by the evaluator within --max-memory).");
    v("multiply_by_inputs", multiply_by_inputs,
      "Multiply the path-integrated gradient by (input - baseline) (global attribution); false gives the local "
      "one. The convergence delta is always that of the global attribution (Captum computes it from the local one).");
    v("tolerance", tolerance,
      "adaptive only: target |convergence delta| / |f(x) - f(baseline)|.");
    v("max_steps", max_steps, "adaptive only: most path points per sample.");
  }
  void validate() const;
};

class IntegratedGradients : public Method<IntegratedGradients, IntegratedGradientsOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "integrated_gradients",
      .family = "gradient",
      .description = "Path integral of gradients from the baseline to the input; sums to f(x) - f(baseline).",
      .reference = "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks",
      .uses_baseline = true,
      .completeness = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Attribution adaptive(Evaluator& evaluator, const ExplainRequest& request) const;
};

// Nodes and weights on [0, 1] for `method` with n points (weights sum to 1).
void quadrature(const std::string& method, int64_t n, std::vector<double>& alphas,
                std::vector<double>& weights);

}  // namespace candela
