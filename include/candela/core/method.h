// A method's facts, written once. Each method class states them in `kTraits` and derives from
// Method<Self, Options>, which supplies name(), options() and uses_baseline() and validates the
// options on construction; registration is then `registry.add<Self>()`, and the registry's
// catalogue (name, family, description, reference, schema) comes from the same place.
//
//   struct SaliencyOptions { bool abs = true; template <class V> void visit(V& v) {...} void validate() const {} };
//   class Saliency : public Method<Saliency, SaliencyOptions> {
//    public:
//     static constexpr MethodTraits kTraits{.name = "saliency", .family = "gradient", ...};
//     using Method::Method;
//     Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
//   };
#pragma once

#include <string>
#include <utility>

#include "candela/core/explainer.h"
#include "candela/core/options.h"

namespace candela {

struct MethodTraits {
  const char* name;         // "integrated_gradients"
  const char* family;       // "gradient"
  const char* description;  // one line
  const char* reference;    // paper
  bool uses_baseline = false;
  bool completeness = false;  // attributions sum to f(x) - f(baseline) (up to the reported delta)
  bool uses_target = true;    // false: the method explains something else (a neuron, the activations)
};

template <class Derived, class OptionsT>
class Method : public Explainer {
 public:
  using Options = OptionsT;
  Method() : Method(Options{}) {}
  explicit Method(Options options) : options_(std::move(options)) { options_.validate(); }
  std::string name() const override { return Derived::kTraits.name; }
  nlohmann::json options() const override { return options_to_json(options_); }
  bool uses_baseline() const override { return Derived::kTraits.uses_baseline; }
  const Options& settings() const { return options_; }

 protected:
  Options options_;
};

// A second registered name for the same algorithm with its own facts, e.g. expected_gradients
// is gradient_shap under the name of its paper:
//   class ExpectedGradients : public Alias<ExpectedGradients, GradientShap> {
//    public:
//     static constexpr MethodTraits kTraits{.name = "expected_gradients", ...};
//     using Alias::Alias;
//   };
template <class Derived, class Base>
class Alias : public Base {
 public:
  using Base::Base;
  std::string name() const override { return Derived::kTraits.name; }
  bool uses_baseline() const override { return Derived::kTraits.uses_baseline; }
};

}  // namespace candela
