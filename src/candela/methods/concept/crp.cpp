// CRP (methods/concept/crp.h).
#include "candela/methods/concept/crp.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/methods/propagation/rule_graph.h"

namespace candela {

CrpResult crp(const Model& model, const std::string& layer, const std::vector<int64_t>& channels,
              const at::Tensor& inputs, const at::Tensor& targets, const LrpOptions& options) {
  options.validate();
  CANDELA_CHECK(!layer.empty(), "CRP needs a layer (see `candela info`).");
  CANDELA_CHECK(targets.dim() == 1 && targets.size(0) == inputs.size(0), "CRP needs one target per sample: ",
                inputs.size(0), " samples, ", detail::shape_str(targets.sizes()), " targets.");
  RuleSettings settings = lrp_rule_settings(options, model.input_spec());
  settings.tap_layer = layer;
  auto graph = RuleGraph::of(model, settings);
  at::Tensor x = inputs.detach().clone().requires_grad_(true);
  auto [out, act] = graph->forward_tapped(x);
  CANDELA_CHECK(out.dim() == 2, "CRP explains a class output [N, classes], got ", detail::shape_str(out.sizes()), ".");
  CANDELA_CHECK(targets.min().item<int64_t>() >= 0 && targets.max().item<int64_t>() < out.size(1), "a target is not a class of the model's ",
                out.size(1), " outputs.");
  CANDELA_CHECK(act.dim() >= 2, "CRP conditions on channels: layer ", layer, " is ", detail::shape_str(act.sizes()), ".");
  for (int64_t c : channels)
    CANDELA_CHECK(c >= 0 && c < act.size(1), "channel ", c, " is out of range: layer ", layer, " has ", act.size(1),
                  " channels.");
  // One-hot output relevance (zennit's attributor(x, one_hot)): the relevance at the layer.
  at::Tensor score = out.gather(1, targets.to(at::kLong).unsqueeze(1)).sum();
  at::Tensor r_layer = torch::autograd::grad({score}, {act}, {}, /*retain_graph=*/true)[0];
  CrpResult r;
  r.output = out.detach();
  r.channel_relevance = r_layer.reshape({r_layer.size(0), r_layer.size(1), -1}).sum(2).to(at::kDouble).detach();
  // Plain LRP: the whole relevance at the layer, on to the input.
  r.lrp = torch::autograd::grad({act}, {x}, {r_layer}, /*retain_graph=*/true)[0].detach();
  std::vector<at::Tensor> maps;
  for (int64_t c : channels) {
    at::Tensor masked = at::zeros_like(r_layer);
    masked.select(1, c).copy_(r_layer.select(1, c));
    maps.push_back(torch::autograd::grad({act}, {x}, {masked}, /*retain_graph=*/true)[0].detach());
  }
  r.heatmaps = maps.empty() ? at::Tensor() : at::stack(maps, 1);
  return r;
}

std::pair<at::Tensor, at::Tensor> crp_reference_samples(const Model& model, const std::string& layer, int64_t channel,
                                                        const at::Tensor& inputs, const at::Tensor& targets, int64_t k,
                                                        const LrpOptions& options, int64_t batch_size) {
  CANDELA_CHECK(k >= 1 && batch_size >= 1, "reference samples need k >= 1 and batch_size >= 1.");
  std::vector<at::Tensor> rel;
  for (int64_t i = 0; i < inputs.size(0); i += batch_size) {
    const int64_t n = std::min(batch_size, inputs.size(0) - i);
    CrpResult r = crp(model, layer, {}, inputs.narrow(0, i, n), targets.narrow(0, i, n), options);
    CANDELA_CHECK(channel >= 0 && channel < r.channel_relevance.size(1), "channel ", channel,
                  " is out of range: layer ", layer, " has ", r.channel_relevance.size(1), " channels.");
    rel.push_back(r.channel_relevance.select(1, channel));
  }
  at::Tensor all = at::cat(rel);
  auto [values, idx] = all.topk(std::min(k, all.size(0)));
  return {idx, values};
}

}  // namespace candela
