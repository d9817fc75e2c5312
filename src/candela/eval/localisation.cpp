// Localisation metrics against ground-truth masks: pointing game, relevance mass and rank accuracy.
#include "metric_common.h"

namespace candela {
namespace {
using namespace metric_common;

enum class Loc { kPointing, kMass, kRank };

// Quantus' PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy (abs = false): is the
// maximum inside the mask; the share of the attribution sum inside it; the share of the top-|mask|
// features that lie inside it. NaN for an empty mask.
class Localisation : public Metric {
 public:
  struct Options {
    bool abs = false;
    template <class V> void visit(V& v) { v("abs", abs, "Use |attribution| (Quantus' default: false)."); }
    void validate() const {}
  };
  Localisation(Options o, Loc kind) : o_(o), kind_(kind) {}
  std::string name() const override {
    return kind_ == Loc::kPointing ? "pointing_game" : kind_ == Loc::kMass ? "relevance_mass_accuracy"
                                                                           : "relevance_rank_accuracy";
  }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return true; }
  bool needs_masks() const override { return true; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const FeatureMap fm = feature_map(in.attributions, in.inputs, in.model->input_spec());
    const int64_t n = fm.values.size(0), p = fm.values.size(1);
    CANDELA_CHECK(in.masks.defined(), name(), " needs ground-truth masks (--masks).");
    CANDELA_CHECK(in.masks.numel() == n * p, name(), ": the masks have ", in.masks.numel() / std::max<int64_t>(1, n),
                  " elements per sample but the attribution maps have ", p,
                  fm.image ? str_cat(" (", fm.height, "x", fm.width, " pixels)") : std::string(),
                  "; give one mask per sample of the input's height and width.");
    const at::Tensor s = in.masks.reshape({n, p}).to(at::kBool);
    at::Tensor a = fm.values;
    if (o_.abs) a = a.abs();
    const at::Tensor count = s.sum(1);
    at::Tensor out;
    if (kind_ == Loc::kPointing) {
      const at::Tensor is_max = a.eq(std::get<0>(a.max(1, true)));
      out = (is_max.logical_and(s)).any(1).to(at::kDouble);
    } else if (kind_ == Loc::kMass) {
      out = (a * s).sum(1) / a.sum(1);
    } else {
      const at::Tensor order = descending(a);
      const at::Tensor hit = s.gather(1, order).to(at::kDouble);
      const at::Tensor within = at::arange(p, kLong).unsqueeze(0).lt(count.unsqueeze(1)).to(at::kDouble);
      out = (hit * within).sum(1) / count.to(at::kDouble);
    }
    return at::where(count.eq(0), at::full_like(out, kNaN), out);
  }

 private:
  Options o_;
  Loc kind_;
};

}  // namespace

void register_localisation_metrics(MetricRegistry& r) {
  r.add(metric_info<Localisation>("pointing_game", "localisation", "Does the maximum of the map fall inside the mask?",
                                  "Zhang et al. 2018, Top-down Neural Attention by Excitation Backprop (Quantus)",
                                  [](Localisation::Options o) { return std::make_unique<Localisation>(o, Loc::kPointing); }));
  r.add(metric_info<Localisation>("relevance_mass_accuracy", "localisation",
                                  "Share of the attribution sum inside the mask.",
                                  "Arras, Osman & Samek 2022, CLEVR-XAI (Quantus)",
                                  [](Localisation::Options o) { return std::make_unique<Localisation>(o, Loc::kMass); }));
  r.add(metric_info<Localisation>("relevance_rank_accuracy", "localisation",
                                  "Share of the top-|mask| features that lie inside the mask.",
                                  "Arras, Osman & Samek 2022, CLEVR-XAI (Quantus)",
                                  [](Localisation::Options o) { return std::make_unique<Localisation>(o, Loc::kRank); }));
}

}  // namespace candela
