// FullGrad (Srinivas & Fleuret 2019), as pytorch-grad-cam computes it: |input gradient x input|
// plus, for every Conv2d and BatchNorm2d with a bias, |bias x gradient of its output| (a
// BatchNorm's bias is beta - mean * gamma / sqrt(var + eps)); each channel map is scaled to
// [0, 1] and resized to the input, everything is summed and scaled to [0, 1] again. It
// always uses all those layers, so it takes no --layer.
#pragma once

#include "candela/core/method.h"

namespace candela {

struct FullGradOptions {
  template <class V> void visit(V&) {}
  void validate() const {}
};

class FullGrad : public Method<FullGrad, FullGradOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "full_grad",
      .family = "cam",
      .description = "Input gradient plus every bias's gradient contribution.",
      .reference = "Srinivas & Fleuret 2019, Full-Gradient Representation"};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
