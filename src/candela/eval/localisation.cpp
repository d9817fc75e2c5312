// Localisation metrics against ground-truth masks: pointing game, relevance mass and rank accuracy.
#include "metric_common.h"

namespace candela {
namespace {
using namespace metric_common;

struct LocalisationOptions {
  bool abs = false;
  template <class V> void visit(V& v) { v("abs", abs, "Use |attribution| (Quantus' default: false)."); }
  void validate() const {}
};

// Quantus' PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy (abs = false): is the
// maximum inside the mask; the share of the attribution sum inside it; the share of the top-|mask|
// features that lie inside it. NaN for an empty mask. The checks are shared; each metric's
// `localise(a [N, P], mask bool [N, P], count = mask.sum(1))` is its definition.
template <class Derived>
class Localisation : public MetricWith<Derived, LocalisationOptions> {
  using Base = MetricWith<Derived, LocalisationOptions>;
  using Base::o_;

 public:
  using Base::Base;
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const FeatureMap fm = feature_map(in.attributions, in.inputs, in.model->input_spec());
    const int64_t n = fm.values.size(0), p = fm.values.size(1);
    CANDELA_CHECK(in.masks.defined(), Derived::kTraits.name, " needs ground-truth masks (--masks).");
    CANDELA_CHECK(in.masks.numel() == n * p, Derived::kTraits.name, ": the masks have ",
                  in.masks.numel() / std::max<int64_t>(1, n), " elements per sample but the attribution maps have ", p,
                  fm.image ? str_cat(" (", fm.height, "x", fm.width, " pixels)") : std::string(),
                  "; give one mask per sample of the input's height and width.");
    const at::Tensor s = in.masks.reshape({n, p}).to(at::kBool);
    at::Tensor a = fm.values;
    if (o_.abs) a = a.abs();
    const at::Tensor count = s.sum(1);
    const at::Tensor out = Derived::localise(a, s, count);
    return at::where(count.eq(0), at::full_like(out, kNaN), out);
  }
};

class PointingGame : public Localisation<PointingGame> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "pointing_game",
      .family = "localisation",
      .description = "Does the maximum of the map fall inside the mask?",
      .reference = "Zhang et al. 2018, Top-down Neural Attention by Excitation Backprop (Quantus)",
      .higher_is_better = true,
      .needs_masks = true};
  using Localisation::Localisation;
  static at::Tensor localise(const at::Tensor& a, const at::Tensor& s, const at::Tensor&) {
    const at::Tensor is_max = a.eq(std::get<0>(a.max(1, true)));
    return (is_max.logical_and(s)).any(1).to(at::kDouble);
  }
};

class RelevanceMassAccuracy : public Localisation<RelevanceMassAccuracy> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "relevance_mass_accuracy",
      .family = "localisation",
      .description = "Share of the attribution sum inside the mask.",
      .reference = "Arras, Osman & Samek 2022, CLEVR-XAI (Quantus)",
      .higher_is_better = true,
      .needs_masks = true};
  using Localisation::Localisation;
  static at::Tensor localise(const at::Tensor& a, const at::Tensor& s, const at::Tensor&) {
    return (a * s).sum(1) / a.sum(1);
  }
};

class RelevanceRankAccuracy : public Localisation<RelevanceRankAccuracy> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "relevance_rank_accuracy",
      .family = "localisation",
      .description = "Share of the top-|mask| features that lie inside the mask.",
      .reference = "Arras, Osman & Samek 2022, CLEVR-XAI (Quantus)",
      .higher_is_better = true,
      .needs_masks = true};
  using Localisation::Localisation;
  static at::Tensor localise(const at::Tensor& a, const at::Tensor& s, const at::Tensor& count) {
    const int64_t p = a.size(1);
    const at::Tensor order = descending(a);
    const at::Tensor hit = s.gather(1, order).to(at::kDouble);
    const at::Tensor within = at::arange(p, kLong).unsqueeze(0).lt(count.unsqueeze(1)).to(at::kDouble);
    return (hit * within).sum(1) / count.to(at::kDouble);
  }
};

}  // namespace

void register_localisation_metrics(MetricRegistry& r) {
  r.add<PointingGame>();
  r.add<RelevanceMassAccuracy>();
  r.add<RelevanceRankAccuracy>();
}

}  // namespace candela
