// Saliency (Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks").
// Definition: a_i = |d f_t(x) / d x_i| (or the signed gradient with abs = false).
#pragma once

#include "candela/core/method.h"

namespace candela {

struct SaliencyOptions {
  bool abs = true;  // Captum's default: absolute value of the gradient
  template <class V> void visit(V& v) { v("abs", abs, "Return the absolute value of the gradient."); }
  void validate() const {}
};

class Saliency : public Method<Saliency, SaliencyOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "saliency",
      .family = "gradient",
      .description = "Gradient of the target with respect to the input.",
      .reference = "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks"};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
