// Layer activation (Captum's LayerActivation; Kokhlikyan et al. 2020, "Captum: A unified and
// generic model interpretability library for PyTorch"). Definition: a = h(x), the output of the
// layer at the input. The target is not used.
#pragma once

#include "candela/core/method.h"

#include <string>
#include <vector>

namespace candela {

struct LayerActivationOptions {
  std::vector<std::string> layers;
  template <class V> void visit(V& v) {
    v("layers", layers, "The one layer to read, by dotted module path (`candela info MODEL` lists them).");
  }
  void validate() const;
};

class LayerActivation : public Method<LayerActivation, LayerActivationOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "layer_activation",
      .family = "layer",
      .description = "The layer's output at the input (no target).",
      .reference = "Kokhlikyan et al. 2020, Captum (LayerActivation)",
      .uses_target = false};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
