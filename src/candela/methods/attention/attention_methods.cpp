// attention_rollout, grad_attention_rollout and attention_flow: the model part (reading the
// attention maps through layer taps) around the arithmetic of attention_graph.cpp.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/taps.h"
#include "candela/methods/attention/attention_flow.h"
#include "candela/methods/attention/attention_graph.h"
#include "candela/methods/attention/attention_rollout.h"
#include "candela/methods/attention/grad_attention_rollout.h"

namespace candela {
using detail::str_cat;

namespace {

// Attention probabilities as [N, heads, L, L]: nn.MultiheadAttention's softmax is [N * heads, L, L].
at::Tensor as_heads(const at::Tensor& a, int64_t n) {
  if (a.dim() == 3 && n > 0 && a.size(0) % n == 0 && a.size(1) == a.size(2)) return a.reshape({n, -1, a.size(1), a.size(2)});
  return a;
}

void check_common(const std::vector<std::string>& layers, int64_t token_index, const char* method) {
  for (const auto& l : layers)
    CANDELA_CHECK(!l.empty(), method, " got an empty layer name; give the attention modules' names or none.");
  CANDELA_CHECK(token_index >= 0, method, ": token_index must be >= 0, got ", token_index, ".");
}

struct AttentionMaps {
  std::vector<std::string> layers;
  at::Tensor output;                       // [N, C]
  std::vector<at::Tensor> maps, gradients;  // per layer [N, H, L, L]
};

// Every attention map for all samples; with a target, also the gradient of its score with
// respect to each map.
AttentionMaps read_attention(Evaluator& ev, const std::vector<std::string>& given, const at::Tensor& x,
                             const Target* target, int64_t token_index, const char* method) {
  AttentionMaps r;
  r.layers = given.empty() ? detail::find_attention_layers(ev.model()) : given;
  const auto taps = LayerTaps::of(ev.model(), r.layers);
  const int64_t n = x.size(0), k = static_cast<int64_t>(r.layers.size());
  std::vector<at::Tensor> outs;
  std::vector<std::vector<at::Tensor>> maps(k), grads(k);
  ev.batched(method, n, Evaluator::Automatic{.with_grad = target != nullptr}, [&](int64_t b, int64_t e) {
    // The JIT's profiled optimisation would switch kernels after the first runs, and the
    // gradients at the attention maps would change in the last bits from one call to the next.
    torch::jit::GraphOptimizerEnabledGuard same_graph_every_run(false);
    at::AutoGradMode grad_mode(target != nullptr);
    auto run = taps->forward(x.slice(0, b, e), {}, /*track=*/target != nullptr);
    for (int64_t i = 0; i < k; ++i) {
      const at::Tensor a = as_heads(run.activations[i], e - b);
      CANDELA_CHECK_T(ShapeMismatch, a.dim() == 4 && a.size(2) == a.size(3), method, ": layer '", r.layers[i],
                      "' outputs ", detail::shape_str(a.sizes()),
                      ", not attention probabilities [N, heads, L, L]. Name the softmax over the attention scores.");
      CANDELA_CHECK(token_index < a.size(2), method, ": token_index ", token_index, " is outside the sequence (length ",
                    a.size(2), ").");
      maps[i].push_back(a.detach());
    }
    if (target) {
      at::Tensor rows = at::arange(b, e, at::TensorOptions().dtype(at::kLong).device(x.device()));
      at::Tensor score = target->scores(run.output, rows).sum();  // top1: each row's own argmax
      auto g = torch::autograd::grad({score}, run.activations, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/true);
      for (int64_t i = 0; i < k; ++i)
        grads[i].push_back(g[i].defined() ? as_heads(g[i].detach(), e - b) : at::zeros_like(maps[i].back()));
    }
    outs.push_back(run.output.detach());
  });
  r.output = at::cat(outs);
  for (int64_t i = 0; i < k; ++i) {
    r.maps.push_back(at::cat(maps[i]));
    if (target) r.gradients.push_back(at::cat(grads[i]));
  }
  return r;
}

}  // namespace

at::Tensor detail::read_attention_maps(const Model& model, const std::vector<std::string>& layers, const at::Tensor& x) {
  const std::vector<std::string> names = layers.empty() ? find_attention_layers(model) : layers;
  const auto taps = LayerTaps::of(model, names);
  at::NoGradGuard no_grad;
  auto run = taps->forward(x, {}, /*track=*/false);
  std::vector<at::Tensor> maps;
  for (size_t i = 0; i < names.size(); ++i) {
    const at::Tensor a = as_heads(run.activations[i], x.size(0));
    CANDELA_CHECK_T(ShapeMismatch, a.dim() == 4 && a.size(2) == a.size(3) && a.sizes() == as_heads(run.activations[0], x.size(0)).sizes(),
                    "layer '", names[i], "' outputs ", shape_str(a.sizes()),
                    ", not attention probabilities [N, heads, L, L] like the other layers'.");
    maps.push_back(a.detach());
  }
  return at::stack(maps, 1);
}

namespace {

Attribution token_result(const AttentionMaps& m, const at::Tensor& values, const at::Tensor& x) {
  Attribution a;
  a.values = values.to(x.scalar_type());
  a.output = m.output;
  a.extra["attention_layers"] = m.layers;
  // Token-level values: over the input itself when it is a token sequence [N, L], else over
  // the attention's positions (a ViT's [CLS] + patches).
  if (!(x.dim() == 2 && x.size(1) == values.size(1))) a.layer = m.layers.back();
  return a;
}

}  // namespace

void AttentionRollout::Options::validate() const {
  check_common(layers, token_index, "attention_rollout");
  CANDELA_CHECK(discard_ratio >= 0.0 && discard_ratio < 1.0, "attention_rollout: discard_ratio must be in [0, 1), got ",
                discard_ratio, ".");
}

Attribution AttentionRollout::attribute(Evaluator& ev, const ExplainRequest& req) const {
  auto m = read_attention(ev, options_.layers, req.inputs, nullptr, options_.token_index, "attention_rollout");
  at::Tensor rollout = detail::attention_rollout(m.maps, options_.head_fusion, options_.discard_ratio);
  Attribution a = token_result(m, rollout.select(1, options_.token_index), req.inputs);
  a.extra["head_fusion"] = options_.head_fusion;
  return a;
}

void GradAttentionRollout::Options::validate() const {
  check_common(layers, token_index, "grad_attention_rollout");
}

Attribution GradAttentionRollout::attribute(Evaluator& ev, const ExplainRequest& req) const {
  auto m = read_attention(ev, options_.layers, req.inputs, &req.target, options_.token_index, "grad_attention_rollout");
  at::Tensor r = detail::gradient_rollout(m.maps, m.gradients);
  Attribution a = token_result(m, r.select(1, options_.token_index), req.inputs);
  a.targets = req.target.classes(m.output);
  return a;
}

void AttentionFlow::Options::validate() const { check_common(layers, token_index, "attention_flow"); }

Attribution AttentionFlow::attribute(Evaluator& ev, const ExplainRequest& req) const {
  auto m = read_attention(ev, options_.layers, req.inputs, nullptr, options_.token_index, "attention_flow");
  std::vector<at::Tensor> residual;
  for (const auto& map : m.maps) residual.push_back(detail::residual_attention(detail::fuse_heads(map, options_.head_fusion), 0.0));
  at::Tensor flow = detail::attention_flow(residual, options_.token_index);
  at::Tensor total = flow.sum(1, /*keepdim=*/true);
  Attribution a = token_result(m, flow / at::where(total > 0, total, at::ones_like(total)), req.inputs);
  a.extra["head_fusion"] = options_.head_fusion;
  a.extra["raw_flow"] = detail::tensor_to_json(flow);
  a.extra["normalisation"] = "flow / sum of flows over the input tokens";
  return a;
}

}  // namespace candela
