// FullGrad (Srinivas & Fleuret 2019), as pytorch-grad-cam computes it: |input gradient x input|
// plus, for every Conv2d and BatchNorm2d with a bias, |bias x gradient of its output| (a
// BatchNorm's bias is beta - mean * gamma / sqrt(var + eps)); each channel map is scaled to
// [0, 1] and resized to the input, everything is summed and scaled to [0, 1] again. It
// always uses all those layers, so it takes no --layer.
#pragma once

#include "candela/core/explainer.h"

namespace candela {

class FullGrad : public Explainer {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options {
    template <class V> void visit(V&) {}
    void validate() const {}
  };
  FullGrad() : FullGrad(Options{}) {}
  explicit FullGrad(Options options) : options_(options) {}
  std::string name() const override { return "full_grad"; }
  nlohmann::json options() const override;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
