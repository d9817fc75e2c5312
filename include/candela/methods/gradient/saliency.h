// Saliency (Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks").
// Definition: a_i = |d f_t(x) / d x_i| (or the signed gradient with abs = false).
#pragma once

#include "candela/core/explainer.h"

namespace candela {

class Saliency : public Explainer {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options {
    bool abs = true;  // Captum's default: absolute value of the gradient
    template <class V> void visit(V& v) { v("abs", abs, "Return the absolute value of the gradient."); }
    void validate() const {}
  };
  Saliency() : Saliency(Options{}) {}
  explicit Saliency(Options options) : options_(options) {}
  std::string name() const override { return "saliency"; }
  nlohmann::json options() const override;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
