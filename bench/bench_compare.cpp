// The Candela side of bench/compare/: one case (a method and the options that match the
// reference library's settings) on one model and input, a warm-up run, then `repeats` timed
// runs; prints one JSON line {"case", "seconds" (best), "all", "evaluations", "setting"} and
// optionally writes the attribution for the agreement check. Batching is Candela's own
// (automatic): that is what the comparison measures. bench/compare/compare.py alternates this
// binary with bench/compare/anchors.py, which runs the same cases in the reference libraries.
//
//   build/bin/bench_compare --case ig50 --model build/fixtures/resnet18.pt --input x.npy \
//       --target 3 --threads 2 --repeats 3 --out attr.npy
//
// --batch-size N fixes the rows per model call instead (a diagnostic: is it the batch size?).
#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "candela/candela.h"

using namespace candela;
using candela::bench::Clock;
using candela::bench::since;

namespace {

// What a case needs besides the method's options: grid features (32 x 32 cells, as the
// anchors' feature mask), the gradient_shap baseline distribution {zeros, -x}, or token
// features (the text fixture; see token_groups).
struct Case {
  const char* name;
  const char* method;
  nlohmann::json options;
  bool grid_features = false;
  bool baseline_distribution = false;
  const char* what;
  bool token_features = false;
};

// One feature per token position up to [SEP] (id 3); [SEP] and the padding after it form one
// group (the padding equals the [PAD] baseline, so it changes no coalition). anchors.py's
// token_groups() builds the same mask for Captum.
at::Tensor token_groups(const at::Tensor& ids) {
  at::Tensor mask = at::arange(ids.size(1), at::kLong).repeat({ids.size(0), 1});
  for (int64_t i = 0; i < ids.size(0); ++i) {
    const at::Tensor sep = (ids[i] == 3).nonzero();
    if (sep.size(0) > 0) {
      const int64_t s = sep[0][0].item<int64_t>();
      mask[i].slice(0, s).fill_(s);
    }
  }
  return mask;
}

const std::vector<Case>& cases() {
  const nlohmann::json layer4 = {{"layers", {"layer4"}}};
  static const std::vector<Case> all = {
      {"ig50", "integrated_gradients", {{"n_steps", 50}, {"method", "gausslegendre"}}, false, false,
       "Captum IntegratedGradients, 50 Gauss-Legendre steps, zero baseline"},
      {"smoothgrad10", "noise_tunnel",
       {{"base_method", "saliency"}, {"nt_type", "smoothgrad"}, {"nt_samples", 10}, {"stdevs", 1.0}}, false, false,
       "Captum NoiseTunnel(Saliency), smoothgrad, 10 samples, stdevs 1"},
      {"gradient_shap", "gradient_shap", {{"n_samples", 5}, {"stdevs", 0.0}}, false, true,
       "Captum GradientShap, 5 samples, baselines {zeros, -x}"},
      {"deeplift", "deep_lift", nlohmann::json::object(), false, false, "Captum DeepLift (Rescale), zero baseline"},
      {"lrp_epsilon_plus_flat", "lrp", {{"composite", "epsilon_plus_flat"}}, false, false,
       "zennit EpsilonPlusFlat + ResNetCanonizer, Gradient attributor"},
      {"grad_cam", "grad_cam", layer4, false, false, "pytorch-grad-cam GradCAM, layer4"},
      {"score_cam", "score_cam", layer4, false, false, "pytorch-grad-cam ScoreCAM, layer4"},
      {"ablation_cam", "ablation_cam", layer4, false, false,
       "pytorch-grad-cam AblationCAM, layer4 (Candela: suffix execution, its default)"},
      {"ablation_cam_full", "ablation_cam", {{"layers", {"layer4"}}, {"suffix_execution", false}}, false, false,
       "the same with full re-runs, as pytorch-grad-cam does (suffix_execution=false)"},
      {"occlusion", "occlusion", {{"sliding_window_shapes", {3, 32, 32}}, {"strides", {3, 16, 16}}}, false, false,
       "Captum Occlusion, window 3x32x32, stride 3x16x16, zero baseline"},
      {"feature_ablation", "feature_ablation", nlohmann::json::object(), true, false,
       "Captum FeatureAblation, 32x32 grid features, zero baseline"},
      {"lime100", "lime", {{"num_samples", 100}}, true, false,
       "lime LimeImageExplainer, 32x32 grid segments, 100 samples"},
      {"kernel_shap", "kernel_shap", {{"n_samples", 200}}, true, false,
       "Captum KernelShap, 32x32 grid features, 200 samples, zero baseline"},
      {"kernel_shap_tokens", "kernel_shap", {{"n_samples", 200}}, false, false,
       "Captum KernelShap on the text fixture's ids, one feature per token, 200 samples, [PAD] (id 0) baseline",
       true},
  };
  return all;
}

void usage(FILE* f) {
  std::fprintf(f,
               "usage: bench_compare --case NAME [--model M.pt] [--input x.npy] [--target K] [--threads N]\n"
               "                     [--repeats R] [--out attr.npy] [--batch-size N]\n"
               "Runs one case once as a warm-up, then R timed runs; prints one JSON line with the best\n"
               "and all wall times, the model evaluations and the batching used.\n"
               "Defaults: the resnet18 fixture, a seeded randn [1, 3, 224, 224] input, target 3, every\n"
               "core, 3 repeats, automatic batching (--batch-size N fixes the rows per model call).\n"
               "Token cases: the text_bert.pt fixture, its first test sentence's ids [1, 16], the\n"
               "predicted class.\n\n"
               "example:\n"
               "  build/bin/bench_compare --case ig50 --model build/fixtures/resnet18.pt --input x.npy \\\n"
               "      --target 3 --threads 2 --repeats 3 --out ig50.npy\n\ncases:\n");
  for (const auto& c : cases()) std::fprintf(f, "  %-22s %s\n", c.name, c.what);
}

}  // namespace

int main(int argc, char** argv) {
  std::string case_name, out;
  std::string model_path, input_path;
  int64_t target = -1, batch_size = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--case" && has_value) case_name = argv[++i];
    else if (a == "--model" && has_value) model_path = argv[++i];
    else if (a == "--input" && has_value) input_path = argv[++i];
    else if (a == "--target" && has_value) target = std::atoll(argv[++i]);
    else if (a == "--out" && has_value) out = argv[++i];
    else if (a == "--batch-size" && has_value) batch_size = std::atoll(argv[++i]);
    else if ((a == "--threads" || a == "--repeats") && has_value) ++i;  // parse_args reads them
    else {
      std::fprintf(stderr, "bench_compare: unknown or incomplete argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  const auto args = candela::bench::parse_args(argc, argv);
  const Case* c = nullptr;
  for (const auto& k : cases())
    if (case_name == k.name) c = &k;
  if (!c) {
    std::fprintf(stderr, "bench_compare: unknown case '%s' (--help lists them)\n", case_name.c_str());
    return 2;
  }
  try {
    if (model_path.empty()) model_path = candela::bench::fixture(c->token_features ? "text_bert.pt" : "resnet18.pt");
    Model m = Model::load(model_path);
    at::Tensor x;
    if (c->token_features) {  // ids [1, L] (as floats: token models take them either way)
      x = (input_path.empty() ? read_npy(candela::bench::fixture("text_test_ids.npy")).slice(0, 0, 1)
                              : read_npy(input_path)).to(at::kFloat);
      if (x.dim() == 1) x = x.unsqueeze(0);
      if (target < 0) target = m.forward(x).argmax(1)[0].item<int64_t>();
    } else {
      x = input_path.empty() ? at::randn({1, 3, 224, 224}, at::detail::createCPUGenerator(0))
                             : read_npy(input_path).to(at::kFloat);
      if (x.dim() == 3) x = x.unsqueeze(0);
      if (target < 0) target = 3;
    }
    ExplainRequest r;
    r.inputs = x;
    r.target = Target::index(target);
    if (c->token_features) r.feature_mask = token_groups(x);
    r.eval.max_batch_size = batch_size;
    if (c->grid_features) r.feature_mask = make_feature_mask("grid:32", x, m.input_spec());
    if (c->baseline_distribution) r.baseline = Baseline::distribution(at::cat({at::zeros_like(x), -x}));
    auto e = Registry::builtin().create(c->method, c->options);
    Attribution a = e->explain(m, r);  // warm-up: builds the inference graph, the rule graph, ...
    double best = 1e30;
    std::vector<double> all;
    for (int i = 0; i < args.repeats; ++i) {
      const auto t = Clock::now();
      a = e->explain(m, r);
      all.push_back(since(t));
      best = std::min(best, all.back());
    }
    if (!out.empty()) write_npy(out, a.values);
    const nlohmann::ordered_json line = {
        {"case", c->name},
        {"seconds", best},
        {"all", all},
        {"evaluations", a.model_evaluations},
        {"setting", std::string(batch_size ? "fixed" : "automatic") + " batching (largest batch " +
                        std::to_string(a.batch_size) + ")"},
        {"threads", args.threads}};
    std::printf("%s\n", line.dump().c_str());
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_compare: %s\n", ex.what());
    return 1;
  }
  return 0;
}
