// Robustness metrics: max and average sensitivity.
#include "metric_common.h"

namespace candela {
namespace {
using namespace metric_common;

// Max- and avg-sensitivity (Yeh et al. 2019; Quantus): inputs perturbed by uniform noise in
// [-lower_bound, lower_bound], explained again; ||a(x) - a(x')|| / ||a(x)|| (Frobenius), the
// maximum or mean over nr_samples perturbations (with return_nan_when_prediction_changes, NaN
// for a sample whose prediction any perturbation changes, as Quantus).
class Sensitivity : public Metric {
 public:
  struct Options {
    int64_t nr_samples = 200;
    double lower_bound = 0.2;
    bool return_nan_when_prediction_changes = false;
    int64_t seed = 0;
    template <class V> void visit(V& v) {
      v("nr_samples", nr_samples, "Perturbations per sample (Quantus' default 200: each is an explanation).");
      v("lower_bound", lower_bound, "Half-width of the uniform noise.");
      v("return_nan_when_prediction_changes", return_nan_when_prediction_changes,
        "NaN for a sample if any perturbation changes its prediction (Quantus' option; default: keep them all).");
      v("seed", seed, "Seed of the noise.");
    }
    void validate() const { CANDELA_CHECK(nr_samples >= 1 && lower_bound > 0, "nr_samples >= 1, lower_bound > 0."); }
  };
  Sensitivity(Options o, bool max) : o_(std::move(o)), max_(max) { o_.validate(); }
  std::string name() const override { return max_ ? "max_sensitivity" : "avg_sensitivity"; }
  nlohmann::json options() const override { return opts_json(o_); }
  bool higher_is_better() const override { return false; }
  bool needs_explainer() const override { return true; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const at::Tensor& x = in.inputs;
    const int64_t n = x.size(0);
    const at::Tensor a = in.attributions.reshape({n, -1}).to(at::kDouble);
    const at::Tensor norm = a.norm(2, 1);
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o_.seed), 0x5e);
    at::Tensor sens = at::full({n, o_.nr_samples}, kNaN, kDouble);
    const at::Tensor predicted = detail::predict_rows(*in.model, in.eval, n, [&](int64_t b, int64_t e) { return x.slice(0, b, e); },
                                              "sensitivity");
    for (int64_t s = 0; s < o_.nr_samples; ++s) {
      const at::Tensor xp = x + (at::rand(x.sizes(), gen, kDouble) * 2 - 1).mul_(o_.lower_bound).to(x.options());
      const at::Tensor pp =
          detail::predict_rows(*in.model, in.eval, n, [&](int64_t b, int64_t e) { return xp.slice(0, b, e); }, "sensitivity");
      const at::Tensor ap = re_explain(in, *in.model, xp, in.targets).reshape({n, -1}).to(at::kDouble);
      at::Tensor v = (a - ap).norm(2, 1) / norm;
      if (o_.return_nan_when_prediction_changes) v = at::where(pp.eq(predicted), v, at::full_like(v, kNaN));
      sens.select(1, s).copy_(v);
    }
    // As Quantus (np.max / np.mean): one NaN makes the sample's score NaN.
    return max_ ? std::get<0>(sens.max(1)) : sens.mean(1);
  }

 private:
  Options o_;
  bool max_;
};

}  // namespace

void register_robustness_metrics(MetricRegistry& r) {
  r.add(metric_info<Sensitivity>("max_sensitivity", "robustness",
                                 "Largest relative change of the explanation under small uniform input noise.",
                                 "Yeh et al. 2019 (Quantus MaxSensitivity)",
                                 [](Sensitivity::Options o) { return std::make_unique<Sensitivity>(o, true); }));
  r.add(metric_info<Sensitivity>("avg_sensitivity", "robustness",
                                 "Mean relative change of the explanation under small uniform input noise.",
                                 "Yeh et al. 2019 (Quantus AvgSensitivity)",
                                 [](Sensitivity::Options o) { return std::make_unique<Sensitivity>(o, false); }));
}

}  // namespace candela
