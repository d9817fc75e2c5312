// Deconvolution (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
// Networks"). Definition: the gradient of the target with each ReLU's backward replaced by
// g_in = max(g_out, 0), without the forward pass's mask (Captum's Deconvolution).
#pragma once

#include "candela/core/method.h"

namespace candela {

struct DeconvolutionOptions {
  template <class V> void visit(V&) {}
  void validate() const {}
};

class Deconvolution : public Method<Deconvolution, DeconvolutionOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "deconvolution",
      .family = "propagation",
      .description = "Gradient with ReLUs passing only positive gradients (no forward mask).",
      .reference = "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks"};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
