// Layer activation (Captum's LayerActivation; Kokhlikyan et al. 2020, "Captum: A unified and
// generic model interpretability library for PyTorch"). Definition: a = h(x), the output of the
// layer at the input. The target is not used.
#pragma once

#include "candela/core/explainer.h"

#include <string>
#include <vector>

namespace candela {

class LayerActivation : public Explainer {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options {
    std::vector<std::string> layers;
    template <class V> void visit(V& v) {
      v("layers", layers, "The one layer to read, by dotted module path (`candela info MODEL` lists them).");
    }
    void validate() const;
  };
  LayerActivation() : LayerActivation(Options{}) {}
  explicit LayerActivation(Options options);
  std::string name() const override { return "layer_activation"; }
  nlohmann::json options() const override;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
