// Input x Gradient (Shrikumar et al. 2016, "Not Just a Black Box"; Captum's InputXGradient).
// Definition: a_i = x_i * d f_t(x) / d x_i.
#pragma once

#include "candela/core/explainer.h"

namespace candela {

class InputXGradient : public Explainer {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options {
    template <class V> void visit(V&) {}
    void validate() const {}
  };
  InputXGradient() : InputXGradient(Options{}) {}
  explicit InputXGradient(Options options) : options_(options) {}
  std::string name() const override { return "input_x_gradient"; }
  nlohmann::json options() const override;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
