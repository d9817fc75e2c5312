// Metric: the interface of every measure of explanation quality, and a metric's facts written
// once. A metric scores the attributions of a batch of samples, one number per sample (NaN
// where it is undefined, e.g. an empty ground-truth mask); every model evaluation goes through
// the evaluator, and sampled metrics take a seed.
//
// Each metric class states its facts in `kTraits` and derives from MetricWith<Self, Options>,
// which supplies name(), options(), higher_is_better(), needs_masks() and needs_explainer() and
// validates the options on construction; registration is then `registry.add<Self>()`.
//
//   struct InfidelityOptions { int64_t n_perturb_samples = 10; ...; template <class V> void visit(V& v) {...}
//                              void validate() const; };
//   class Infidelity : public MetricWith<Infidelity, InfidelityOptions> {
//    public:
//     static constexpr MetricTraits kTraits{.name = "infidelity", .family = "faithfulness", ...,
//                                           .higher_is_better = false};
//     using MetricWith::MetricWith;
//     at::Tensor score(const MetricInput& input, nlohmann::json* details) const override;
//   };
//
// One algorithm under several names (deletion and insertion, the localisation metrics) is a base
// templated on Derived, and one thin class per name with its own kTraits that passes the variant
// to the base's constructor (DeletionInsertion<Derived>: Deletion, Insertion) or defines the step
// that differs as a static function the base calls (Localisation<Derived>: PointingGame::localise).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <string>
#include <utility>

#include "candela/core/explainer.h"
#include "candela/core/options.h"

namespace candela {

// What a metric sees: the samples, their attributions by one method, the classes explained,
// and what re-explaining needs (robustness and randomisation metrics explain again).
struct MetricInput {
  const Model* model = nullptr;
  at::Tensor inputs;        // [N, ...]
  at::Tensor attributions;  // [N, ...]: the inputs' shape, or [N, 1, H, W] maps for images
  at::Tensor targets;       // int64 [N]
  at::Tensor masks;         // ground truth [N, H, W] (images) or [N, ...] (elements); may be undefined
  const Explainer* explainer = nullptr;
  ExplainRequest request;   // baseline, evaluation options used to re-explain
  EvalOptions eval;
};

class Metric {
 public:
  virtual ~Metric() = default;
  virtual std::string name() const = 0;
  virtual nlohmann::json options() const = 0;
  virtual bool higher_is_better() const = 0;
  virtual bool needs_masks() const { return false; }
  virtual bool needs_explainer() const { return false; }
  // One score per sample, double [N]. `details` (may be null) receives per-sample extras such
  // as curves: {"curve": [[...], ...]}.
  virtual at::Tensor score(const MetricInput& input, nlohmann::json* details = nullptr) const = 0;
};

struct MetricTraits {
  const char* name;         // "deletion"
  const char* family;       // "faithfulness"
  const char* description;  // one line
  const char* reference;    // paper (and the library whose definition is followed)
  // With the default options: a metric whose direction depends on its options (region_perturbation's
  // order) overrides higher_is_better().
  bool higher_is_better;
  bool needs_masks = false;      // compares with ground-truth masks (--masks)
  bool needs_explainer = false;  // explains again (robustness, randomisation)
};

template <class Derived, class OptionsT>
class MetricWith : public Metric {
 public:
  using Options = OptionsT;
  MetricWith() : MetricWith(Options{}) {}
  explicit MetricWith(Options options) : o_(std::move(options)) { o_.validate(); }
  std::string name() const override { return Derived::kTraits.name; }
  nlohmann::json options() const override { return options_to_json(o_); }
  bool higher_is_better() const override { return Derived::kTraits.higher_is_better; }
  bool needs_masks() const override { return Derived::kTraits.needs_masks; }
  bool needs_explainer() const override { return Derived::kTraits.needs_explainer; }
  const Options& settings() const { return o_; }

 protected:
  Options o_;
};

}  // namespace candela
