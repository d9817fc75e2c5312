#include "candela/methods/cam/full_grad.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/script.h>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/graph/graph_util.h"
#include "candela/graph/taps.h"
#include "cam_util.h"

namespace candela {

namespace {

// Per-(sample, channel) min-max scaling and resizing, summed over channels: [N, C, h, w] -> [N, H, W].
at::Tensor scaled_channel_sum(const at::Tensor& t, int64_t h, int64_t w) {
  const int64_t n = t.size(0), c = t.size(1);
  at::Tensor maps = detail::resize(detail::min_max(t.reshape({n * c, t.size(2), t.size(3)})), h, w);
  return maps.reshape({n, c, h, w}).sum(1);
}

}  // namespace

Attribution FullGrad::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const Model& model = ev.model();
  CANDELA_CHECK_T(UnsupportedModel, model.module(), "full_grad needs a TorchScript model.");
  const std::string layout = model.input_spec().layout;
  const at::Tensor& x = req.inputs;
  const auto [height, width] = detail::input_hw(x, layout);

  // A traced BatchNorm keeps eps only as a constant of its batch_norm call.
  // The graph is inlined once, on the first BatchNorm that needs it.
  std::shared_ptr<torch::jit::Graph> graph;
  auto graph_eps = [&](const std::string& path) -> double {
    if (!graph) graph = detail::inlined_forward(*model.module());
    for (auto* node : graph->nodes())
      if (node->kind() == c10::aten::batch_norm && detail::module_path(node) == path)
        if (auto eps = torch::jit::toIValue(node->input(7))) return eps->toDouble();
    throw UnsupportedModel("full_grad cannot find the eps of BatchNorm2d '" + path + "'.");
  };
  // Every Conv2d and BatchNorm2d with a bias, with its (effective) bias.
  std::vector<std::string> layers;
  std::vector<at::Tensor> biases;
  for (const auto& item : model.module()->named_modules()) {
    const auto& type = item.value.type()->name();
    const std::string kind = type ? type->name() : "";
    if (kind != "Conv2d" && kind != "BatchNorm2d") continue;
    const auto& m = item.value;
    if (!m.hasattr("bias") || !m.attr("bias").isTensor()) continue;
    at::Tensor bias = m.attr("bias").toTensor().detach();
    if (kind == "BatchNorm2d") {
      at::Tensor mean = m.attr("running_mean").toTensor(), var = m.attr("running_var").toTensor();
      at::Tensor weight = m.attr("weight").toTensor().detach();
      const double eps = m.hasattr("eps") ? m.attr("eps").toDouble() : graph_eps(item.name);
      bias = -(mean * weight / at::sqrt(var + eps)) + bias;
    }
    layers.push_back(item.name);
    biases.push_back(bias);
  }
  CANDELA_CHECK_T(UnsupportedModel, !layers.empty(), "full_grad found no Conv2d or BatchNorm2d layer with a bias.");
  const LayerTaps& taps = *LayerTaps::of(model, layers);

  const int64_t n = x.size(0);
  std::vector<at::Tensor> maps, outs;
  ev.batched("full_grad", n, ev.batch_size(true), [&](int64_t b, int64_t e) {
    at::Tensor xb = x.slice(0, b, e).detach().requires_grad_(true);
    at::AutoGradMode grad_mode(true);
    auto run = taps.forward(xb);
    at::Tensor s = req.target.scores(run.output, at::arange(b, e, at::TensorOptions().dtype(at::kLong)));
    std::vector<at::Tensor> wrt = {xb};
    wrt.insert(wrt.end(), run.activations.begin(), run.activations.end());
    auto g = torch::autograd::grad({s.sum()}, wrt, {}, false, false, /*allow_unused=*/true);
    at::NoGradGuard no_grad;
    at::Tensor input_term = (g[0] * xb).abs();
    if (layout == "NHWC") input_term = input_term.permute({0, 3, 1, 2});
    at::Tensor total = scaled_channel_sum(input_term, height, width);
    for (size_t l = 0; l < layers.size(); ++l) {
      if (!g[l + 1].defined() || g[l + 1].dim() != 4) continue;
      total += scaled_channel_sum((biases[l].view({1, -1, 1, 1}) * g[l + 1]).abs(), height, width);
    }
    maps.push_back(detail::min_max(total));
    outs.push_back(run.output.detach());
  });
  Attribution a;
  a.output = at::cat(outs);
  a.values = at::cat(maps).unsqueeze(1);
  a.spatial_map = true;
  a.targets = req.target.classes(a.output);
  a.extra["bias_layers"] = layers.size();
  return a;
}

}  // namespace candela
