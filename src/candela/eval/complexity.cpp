// Complexity (sparseness, entropy) and the completeness error.
#include "metric_common.h"

namespace candela {
namespace {
using namespace metric_common;

// None of these metrics has settings.
struct NoOptions {
  template <class V> void visit(V&) {}
  void validate() const {}
};

// Sparseness (Chalasani et al. 2020; Quantus): the Gini index of |a|.
class Sparseness : public MetricWith<Sparseness, NoOptions> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "sparseness",
      .family = "complexity",
      .description = "Gini index of |attributions| (higher: sparser).",
      .reference = "Chalasani et al. 2020, Concise Explanations of Neural Networks (Quantus)",
      .higher_is_better = true};
  using MetricWith::MetricWith;
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const at::Tensor a = feature_map(in.attributions, in.inputs, in.model->input_spec()).values.abs();
    const int64_t p = a.size(1);
    const at::Tensor s = std::get<0>((a + 1e-7).sort(1));
    const at::Tensor k = at::arange(1, p + 1, kDouble).unsqueeze(0);
    return ((2 * k - p - 1) * s).sum(1) / (p * s.sum(1));
  }
};

// Entropy (Bhatt et al. 2020; Quantus' Complexity): the Shannon entropy of |a| / sum |a|.
class Entropy : public MetricWith<Entropy, NoOptions> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "entropy",
      .family = "complexity",
      .description = "Shannon entropy of |attributions| normalised to sum 1 (lower: simpler).",
      .reference = "Bhatt, Weller & Moura 2020 (Quantus Complexity)",
      .higher_is_better = false};
  using MetricWith::MetricWith;
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const at::Tensor a = feature_map(in.attributions, in.inputs, in.model->input_spec()).values.abs();
    const at::Tensor q = a / a.sum(1, true);
    return -(q * at::log(q + 1e-12)).sum(1);
  }
};

// Completeness error: |sum(a) - (f_t(x) - f_t(baseline))| with the method's baseline.
class CompletenessError : public MetricWith<CompletenessError, NoOptions> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "completeness_error",
      .family = "axiomatic",
      .description = "|sum of attributions - (f(x) - f(baseline))| for the method's baseline.",
      .reference = "Sundararajan et al. 2017 (completeness); Quantus Completeness",
      .higher_is_better = false};
  using MetricWith::MetricWith;
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
  r.add<Sparseness>();
  r.add<Entropy>();
  r.add<CompletenessError>();
}

}  // namespace candela
