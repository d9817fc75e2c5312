// Complexity (sparseness, entropy) and the completeness error.
#include "metric_common.h"

namespace candela {
namespace {
using namespace metric_common;

// Sparseness (Chalasani et al. 2020; Quantus): the Gini index of |a|. Entropy (Bhatt et al. 2020;
// Quantus' Complexity): the Shannon entropy of |a| / sum |a|.
class Complexity : public Metric {
 public:
  struct Options {
    template <class V> void visit(V&) {}
    void validate() const {}
  };
  Complexity(Options, bool gini) : gini_(gini) {}
  std::string name() const override { return gini_ ? "sparseness" : "entropy"; }
  nlohmann::json options() const override { return nlohmann::json::object(); }
  bool higher_is_better() const override { return gini_; }
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const at::Tensor a = feature_map(in.attributions, in.inputs, in.model->input_spec()).values.abs();
    const int64_t p = a.size(1);
    if (gini_) {
      const at::Tensor s = std::get<0>((a + 1e-7).sort(1));
      const at::Tensor k = at::arange(1, p + 1, kDouble).unsqueeze(0);
      return ((2 * k - p - 1) * s).sum(1) / (p * s.sum(1));
    }
    const at::Tensor q = a / a.sum(1, true);
    return -(q * at::log(q + 1e-12)).sum(1);
  }

 private:
  bool gini_;
};

// Completeness error: |sum(a) - (f_t(x) - f_t(baseline))| with the method's baseline.
class CompletenessError : public Metric {
 public:
  struct Options {
    template <class V> void visit(V&) {}
    void validate() const {}
  };
  explicit CompletenessError(Options) {}
  std::string name() const override { return "completeness_error"; }
  nlohmann::json options() const override { return nlohmann::json::object(); }
  bool higher_is_better() const override { return false; }
  at::Tensor score(const MetricInput& in, nlohmann::json* details) const override {
    const at::Tensor& x = in.inputs;
    const int64_t n = x.size(0);
    const at::Tensor ref = in.request.baseline.for_inputs(x, in.model->input_spec().layout, 0).to(x.options());
    const at::Tensor owner = at::arange(n, kLong).repeat_interleave(2);
    const at::Tensor f = evaluate_rows(
                             *in.model, in.eval, 2 * n,
                             [&](int64_t b, int64_t e) {
                               std::vector<at::Tensor> rows;
                               for (int64_t r = b; r < e; ++r) rows.push_back((r % 2 ? ref : x).slice(0, r / 2, r / 2 + 1));
                               return at::cat(rows);
                             },
                             owner, in.targets, false, "completeness_error")
                             .view({n, 2});
    const at::Tensor gap = f.select(1, 0) - f.select(1, 1);
    const at::Tensor sums = in.attributions.reshape({n, -1}).to(at::kDouble).sum(1);
    const at::Tensor err = (sums - gap).abs();
    if (details) (*details)["relative"] = detail::tensor_to_json(err / gap.abs().clamp_min(1e-12));
    return err;
  }
};

}  // namespace

void register_complexity_metrics(MetricRegistry& r) {
  r.add(metric_info<Complexity>("sparseness", "complexity", "Gini index of |attributions| (higher: sparser).",
                                "Chalasani et al. 2020, Concise Explanations of Neural Networks (Quantus)",
                                [](Complexity::Options o) { return std::make_unique<Complexity>(o, true); }));
  r.add(metric_info<Complexity>("entropy", "complexity",
                                "Shannon entropy of |attributions| normalised to sum 1 (lower: simpler).",
                                "Bhatt, Weller & Moura 2020 (Quantus Complexity)",
                                [](Complexity::Options o) { return std::make_unique<Complexity>(o, false); }));
  r.add(metric_info<CompletenessError>("completeness_error", "axiomatic",
                                       "|sum of attributions - (f(x) - f(baseline))| for the method's baseline.",
                                       "Sundararajan et al. 2017 (completeness); Quantus Completeness",
                                       [](CompletenessError::Options o) { return std::make_unique<CompletenessError>(o); }));
}

}  // namespace candela
