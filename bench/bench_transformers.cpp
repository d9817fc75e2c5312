// Transformer explanations on the BERT-like text fixture (tests/fixtures/make_text_fixtures.py) and
// the small ViT (tests/fixtures/make_vit_fixtures.py):
//  1. AttnLRP's cost against one plain forward + backward pass, in the same run: the plain pass is
//     the tapped forward graph and the gradient of the target logit with respect to the token
//     embedding (what any embedding-layer gradient method pays, without Candela's evaluator);
//     attn_lrp runs through Explainer::explain (evaluator, rule graph, relevance bookkeeping).
//     LXT, the anchor, claims one backward pass; the target is a ratio <= 2. On the ViT the
//     relevance goes down to the pixels and the plain pass is the gradient w.r.t. the image.
//  2. Attention flow (Dinic's max-flow, one flow per input token) by sequence length 16, 64, 128
//     on random attention maps with 2 and 12 layers, per sample.
//
//   build/bin/bench_transformers [--threads N] [--repeats R]
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>

#include "bench_util.h"
#include "candela/candela.h"
#include "candela/detail/tensor_util.h"

using namespace candela;
using candela::bench::Clock;
using candela::bench::since;
using candela::bench::best_of;

namespace {

constexpr int kWarmup = 3;

double plain_pass(const Model& m, const at::Tensor& x, int repeats) {
  auto taps = LayerTaps::of(m, {"tok"});
  double best = 1e30;
  for (int r = 0; r < repeats + kWarmup; ++r) {
    auto t = Clock::now();
    at::AutoGradMode grad(true);
    auto run = taps->forward(x, {}, /*track=*/true);
    torch::autograd::grad({run.output.select(1, 1).sum()}, {run.activations[0]});
    if (r >= kWarmup) best = std::min(best, since(t));
  }
  return best;
}

double method_time(const Model& m, const at::Tensor& x, const std::string& name, const nlohmann::json& opts,
                   int repeats) {
  auto e = Registry::builtin().create(name, opts);
  ExplainRequest req{.inputs = x, .target = Target::index(1)};
  return best_of(repeats, kWarmup, [&] { e->explain(m, req); });
}

}  // namespace

int main(int argc, char** argv) {
  auto args = candela::bench::parse_args(
      argc, argv, 5,
      "usage: bench_transformers [--threads N] [--repeats R]\n\n"
      "AttnLRP / (forward + backward) on the text fixture and the ViT, and attention flow time by sequence length.\n\n"
      "example:\n  build/bin/bench_transformers --threads 2 --repeats 5\n");
  Model model = Model::load(bench::fixture("text_bert.pt"));
  const at::Tensor all = read_npy(bench::fixture("text_test_ids.npy")).to(at::kFloat);
  std::printf("threads %d, best of %d runs\n\n", args.threads, args.repeats);
  std::printf("%-34s %8s %12s %12s %8s\n", "text_bert (2 layers, L=16, D=32)", "batch", "plain s", "method s", "ratio");
  for (int64_t batch : {1, 16, 64}) {
    const at::Tensor x = all.slice(0, 0, batch).contiguous();
    const double plain = plain_pass(model, x, args.repeats);
    for (const auto& [name, opts] : std::vector<std::pair<std::string, nlohmann::json>>{
             {"attn_lrp", {{"layers", {"tok"}}}},
             {"attn_lrp", {{"layers", {"tok"}}, {"variant", "cp_lrp"}}},
             {"layer_gradient_x_activation", {{"layers", {"tok"}}}},
             {"grad_attention_rollout", nlohmann::json::object()},
             {"attention_rollout", nlohmann::json::object()}}) {
      const double t = method_time(model, x, name, opts, args.repeats);
      std::string label = name + (opts.contains("variant") ? " (cp_lrp)" : "");
      std::printf("%-34s %8lld %12.5f %12.5f %8.2f\n", label.c_str(), static_cast<long long>(batch), plain, t,
                  t / plain);
    }
  }

  // The ViT (tests/fixtures/make_vit_fixtures.py): relevance down to the pixels; the plain pass is
  // the forward and the gradient of the target logit with respect to the image.
  Model vit = Model::load(bench::fixture("vit.pt"));
  const at::Tensor images = read_npy(bench::fixture("vit_test_images.npy"));
  std::printf("\n%-34s %8s %12s %12s %8s\n", "vit (2 layers, 16+1 tokens, D=32)", "batch", "plain s", "method s",
              "ratio");
  for (int64_t batch : {1, 16, 64}) {
    const at::Tensor x = images.slice(0, 0, batch).contiguous();
    const double plain = best_of(args.repeats, kWarmup, [&] {
      at::AutoGradMode grad(true);
      at::Tensor in = x.detach().requires_grad_(true);
      torch::autograd::grad({vit.forward(in).select(1, 1).sum()}, {in});
    });
    for (const auto& [name, opts] : std::vector<std::pair<std::string, nlohmann::json>>{
             {"attn_lrp", nlohmann::json::object()},
             {"attn_lrp", {{"variant", "cp_lrp"}}},
             {"input_x_gradient", nlohmann::json::object()},
             {"grad_attention_rollout", nlohmann::json::object()},
             {"attention_rollout", nlohmann::json::object()}}) {
      const double t = method_time(vit, x, name, opts, args.repeats);
      std::string label = name + (opts.contains("variant") ? " (cp_lrp)" : "");
      std::printf("%-34s %8lld %12.5f %12.5f %8.2f\n", label.c_str(), static_cast<long long>(batch), plain, t,
                  t / plain);
    }
  }

  std::printf("\nattention flow, one sample (all input tokens), random maps, 2 heads\n");
  std::printf("%8s %8s %12s\n", "layers", "length", "seconds");
  for (int64_t layers : {2, 12})
    for (int64_t l : {16, 64, 128}) {
      auto gen = candela::detail::seeded_generator(1, 0);
      std::vector<at::Tensor> res;
      for (int64_t i = 0; i < layers; ++i)
        res.push_back(candela::detail::residual_attention(
            at::softmax(at::randn({1, 2, l, l}, gen, at::TensorOptions().dtype(at::kDouble)), -1).mean(1), 0.0));
      double best = 1e30;
      for (int r = 0; r < args.repeats; ++r) {
        auto t = Clock::now();
        candela::detail::attention_flow(res, 0);
        best = std::min(best, since(t));
      }
      std::printf("%8lld %8lld %12.4f\n", static_cast<long long>(layers), static_cast<long long>(l), best);
    }
  return 0;
}
