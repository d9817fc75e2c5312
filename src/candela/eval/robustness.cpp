// Robustness metrics: max and average sensitivity.
#include "metric_common.h"

namespace candela {
namespace {
using namespace metric_common;

// Max- and avg-sensitivity (Yeh et al. 2019; Quantus): inputs perturbed by uniform noise in
// [-lower_bound, lower_bound], explained again; ||a(x) - a(x')|| / ||a(x)|| (Frobenius), the
// maximum or mean over nr_samples perturbations (with return_nan_when_prediction_changes, NaN
// for a sample whose prediction any perturbation changes, as Quantus).
struct SensitivityOptions {
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

template <class Derived>
class Sensitivity : public MetricWith<Derived, SensitivityOptions> {
  using Base = MetricWith<Derived, SensitivityOptions>;
  using Base::o_;

 public:
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

 protected:
  Sensitivity(SensitivityOptions o, bool max) : Base(std::move(o)), max_(max) {}

 private:
  bool max_;
};

class MaxSensitivity : public Sensitivity<MaxSensitivity> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "max_sensitivity",
      .family = "robustness",
      .description = "Largest relative change of the explanation under small uniform input noise.",
      .reference = "Yeh et al. 2019 (Quantus MaxSensitivity)",
      .higher_is_better = false,
      .needs_explainer = true};
  explicit MaxSensitivity(Options o = {}) : Sensitivity(std::move(o), /*max=*/true) {}
};

class AvgSensitivity : public Sensitivity<AvgSensitivity> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "avg_sensitivity",
      .family = "robustness",
      .description = "Mean relative change of the explanation under small uniform input noise.",
      .reference = "Yeh et al. 2019 (Quantus AvgSensitivity)",
      .higher_is_better = false,
      .needs_explainer = true};
  explicit AvgSensitivity(Options o = {}) : Sensitivity(std::move(o), /*max=*/false) {}
};

}  // namespace

void register_robustness_metrics(MetricRegistry& r) {
  r.add<MaxSensitivity>();
  r.add<AvgSensitivity>();
}

}  // namespace candela
