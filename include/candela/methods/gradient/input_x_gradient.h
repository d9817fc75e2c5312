// Input x Gradient (Shrikumar et al. 2016, "Not Just a Black Box"; Captum's InputXGradient).
// Definition: a_i = x_i * d f_t(x) / d x_i.
#pragma once

#include "candela/core/method.h"

namespace candela {

struct InputXGradientOptions {
  template <class V> void visit(V&) {}
  void validate() const {}
};

class InputXGradient : public Method<InputXGradient, InputXGradientOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "input_x_gradient",
      .family = "gradient",
      .description = "Input times the gradient of the target.",
      .reference = "Shrikumar et al. 2016, Not Just a Black Box"};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
