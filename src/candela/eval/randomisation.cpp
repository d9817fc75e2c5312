// Randomisation sanity checks: model parameter randomisation, random logit.
#include "metric_common.h"

namespace candela {
namespace {
using namespace metric_common;

at::Tensor similarity(const std::string& kind, const at::Tensor& a, const at::Tensor& b) {
  return kind == "ssim" ? ssim_rows(a, b) : kind == "pearson" ? pearson_rows(a, b) : spearman_rows(a, b);
}

// Model parameter randomisation (Adebayo et al. 2018; Quantus' MPRT, abs = true): the layers'
// parameters are replaced by random values (normal, each tensor's own std) from the output
// layer down (cascading: cumulatively; independent: one layer at a time) and the sample
// explained again; the score is the mean similarity (Spearman by default) between the original
// and the randomised maps over the layers. A method that depends on the model scores low.
// mode "full" randomises every layer (the same draws as cascading) and explains once: the score
// is the last point of the cascading curve, at the cost of one explanation instead of one per
// layer (the report's default).
struct ParameterRandomisationOptions {
  std::string mode = "cascading";
  std::string similarity = "spearman";
  std::string layer_order = "top_down";
  bool abs = true;
  int64_t seed = 42;
  template <class V> void visit(V& v) {
    v("mode", mode, "cascading (cumulative, the paper's), independent, or full (every layer at once: one explanation, "
                    "the last point of the cascading curve).",
      std::vector<std::string>{"cascading", "independent", "full"});
    v("similarity", similarity, "spearman (Quantus' default), pearson or ssim.",
      std::vector<std::string>{"spearman", "pearson", "ssim"});
    v("layer_order", layer_order, "top_down (output first) or bottom_up.",
      std::vector<std::string>{"top_down", "bottom_up"});
    v("abs", abs, "Compare |attributions| (Quantus' default).");
    v("seed", seed, "Seed of the random parameters.");
  }
  void validate() const {}
};

class ParameterRandomisation : public MetricWith<ParameterRandomisation, ParameterRandomisationOptions> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "model_parameter_randomisation",
      .family = "randomisation",
      .description = "Similarity of the explanation to itself after randomising layers (lower: the method depends on "
                     "the model).",
      .reference = "Adebayo et al. 2018, Sanity Checks for Saliency Maps (Quantus MPRT)",
      .higher_is_better = false,
      .needs_explainer = true};
  using MetricWith::MetricWith;
  at::Tensor score(const MetricInput& in, nlohmann::json* details) const override {
    const torch::jit::Module* base = in.model->module();
    CANDELA_CHECK_T(UnsupportedModel, base != nullptr,
                    "model_parameter_randomisation randomises a TorchScript model's parameters; this model is a "
                    "plain function.");
    // Layers: modules that own parameters, in definition order.
    std::vector<std::string> layers;
    for (const auto& m : base->named_modules())
      if (m.value.named_parameters(/*recurse=*/false).size() > 0) layers.push_back(m.name);
    CANDELA_CHECK_T(UnsupportedModel, !layers.empty(), "the model has no parameters to randomise.");
    if (o_.layer_order == "top_down") std::reverse(layers.begin(), layers.end());
    const int64_t n = in.inputs.size(0);
    auto prep = [&](const at::Tensor& a) {
      at::Tensor m = feature_map(a, in.inputs, in.model->input_spec()).values;
      return o_.abs ? m.abs() : m;
    };
    const at::Tensor original = prep(in.attributions);
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o_.seed), 0x3a);
    torch::jit::Module current = base->clone();
    std::vector<at::Tensor> per_layer;
    nlohmann::json names = nlohmann::json::array();
    const bool cumulative = o_.mode != "independent";
    for (const auto& layer : layers) {
      torch::jit::Module model_copy = cumulative ? current : base->clone();
      for (const auto& m : model_copy.named_modules()) {
        if (m.name != layer) continue;
        at::NoGradGuard ng;
        for (const auto& p : m.value.named_parameters(false)) {
          at::Tensor t = p.value;
          const double sd = t.numel() > 1 ? t.to(at::kDouble).std().item<double>() : 1.0;
          t.detach().copy_(at::randn(t.sizes(), gen, kDouble).mul_(sd > 0 ? sd : 1.0).to(t.options()));
        }
      }
      if (cumulative) current = model_copy;
      if (o_.mode == "full" && layer != layers.back()) continue;
      Model randomised = Model::from_module(cumulative ? current.clone() : model_copy, in.model->input_spec());
      const at::Tensor a = prep(re_explain(in, randomised, in.inputs, in.targets));
      per_layer.push_back(similarity(o_.similarity, original, a));
      names.push_back(o_.mode == "full" ? "all " + std::to_string(layers.size()) + " layers" : layer);
    }
    const at::Tensor all = at::stack(per_layer, 1);  // [n, layers]
    if (details) {
      (*details)["layers"] = names;
      (*details)["similarity_per_layer"] = detail::tensor_to_json(all);
    }
    return at::nanmean(all, 1);
    (void)n;
  }
};

// Random logit (Sixt, Granz & Landgraf 2020; Quantus' RandomLogit): the similarity (SSIM) of
// the explanation of the target and of a random other class. Low is better.
struct RandomLogitOptions {
  std::string similarity = "ssim";
  int64_t seed = 42;
  template <class V> void visit(V& v) {
    v("similarity", similarity, "ssim (Quantus' default), spearman or pearson.",
      std::vector<std::string>{"ssim", "spearman", "pearson"});
    v("seed", seed, "Seed of the other class.");
  }
  void validate() const {}
};

class RandomLogit : public MetricWith<RandomLogit, RandomLogitOptions> {
 public:
  static constexpr MetricTraits kTraits{
      .name = "random_logit",
      .family = "randomisation",
      .description = "Similarity of the explanations of the target and of a random other class (lower is better).",
      .reference = "Sixt, Granz & Landgraf 2020, When Explanations Lie (Quantus)",
      .higher_is_better = false,
      .needs_explainer = true};
  using MetricWith::MetricWith;
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    const int64_t n = in.inputs.size(0);
    at::Tensor out;
    {
      at::NoGradGuard ng;
      out = in.model->forward(in.inputs.slice(0, 0, 1));
    }
    const int64_t classes = out.reshape({1, -1}).size(1);
    CANDELA_CHECK(classes >= 2, "random_logit needs a model with at least 2 classes.");
    std::mt19937_64 rng(static_cast<uint64_t>(o_.seed));
    at::Tensor other = at::empty({n}, kLong);
    for (int64_t i = 0; i < n; ++i) {
      // mt19937_64's stream is the same everywhere; std::uniform_int_distribution is not.
      int64_t c = static_cast<int64_t>(rng() % static_cast<uint64_t>(classes - 1));
      if (c >= in.targets[i].item<int64_t>()) ++c;
      other[i] = c;
    }
    const at::Tensor a = feature_map(in.attributions, in.inputs, in.model->input_spec()).values;
    const at::Tensor b = feature_map(re_explain(in, *in.model, in.inputs, other), in.inputs, in.model->input_spec()).values;
    return similarity(o_.similarity, a, b);
  }
};

}  // namespace

void register_randomisation_metrics(MetricRegistry& r) {
  r.add<ParameterRandomisation>();
  r.add<RandomLogit>();
}

}  // namespace candela
