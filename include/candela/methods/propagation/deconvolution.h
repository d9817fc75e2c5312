// Deconvolution (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
// Networks"). Definition: the gradient of the target with each ReLU's backward replaced by
// g_in = max(g_out, 0), without the forward pass's mask (Captum's Deconvolution).
#pragma once

#include "candela/core/explainer.h"

namespace candela {

class Deconvolution : public Explainer {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options {
    template <class V> void visit(V&) {}
    void validate() const {}
  };
  Deconvolution() : Deconvolution(Options{}) {}
  explicit Deconvolution(Options options) : options_(options) {}
  std::string name() const override { return "deconvolution"; }
  nlohmann::json options() const override;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
