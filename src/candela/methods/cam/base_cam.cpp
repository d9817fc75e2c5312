#include "candela/methods/cam/base_cam.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/taps.h"
#include "cam_util.h"

namespace candela {
using detail::shape_str;

void CamOptions::validate_cam() const {
  CANDELA_CHECK(reshape_grid.empty() || (reshape_grid.size() == 2 && reshape_grid[0] > 0 && reshape_grid[1] > 0),
                "reshape_grid must be two positive integers h,w (the token grid), got ", reshape_grid.size(),
                " values.");
  for (const auto& l : layers) CANDELA_CHECK(!l.empty(), "a layer name is empty.");
}

BaseCam::BaseCam(CamOptions options) : cam_(std::move(options)) { cam_.validate_cam(); }

at::Tensor BaseCam::weighted_sum(const at::Tensor& weights, const at::Tensor& activations) {
  return (weights.unsqueeze(-1).unsqueeze(-1) * activations).sum(1);
}

at::Tensor first_principal_projection(const at::Tensor& activations) {
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < activations.size(0); ++i) {
    at::Tensor a = at::nan_to_num(activations[i].to(at::kDouble), 0.0, 0.0, 0.0);
    at::Tensor flat = a.reshape({a.size(0), -1}).t();  // [positions, channels]
    flat = flat - flat.mean(0, /*keepdim=*/true);
    at::Tensor vt = std::get<2>(at::linalg_svd(flat, /*full_matrices=*/false));
    out.push_back(at::matmul(flat, vt[0]).reshape({a.size(1), a.size(2)}));
  }
  return at::stack(out).to(activations.scalar_type());
}

namespace detail {

// The spatial map computed last: among layers run once with an output [N, C, h, w] and h * w > 1,
// the one whose output the forward computes last; of modules that hand on the same tensor, the
// innermost (ResNet: `layer4.1`, pytorch-grad-cam's `model.layer4[-1]`, not the 1x1 `avgpool`
// after it, whose map would be one constant value). Maps of one pixel are the fallback.
std::string default_cam_layer(const Model& model) {
  const auto layers = model.layers();
  const LayerInfo* best = nullptr;
  for (bool spatial : {true, false}) {
    for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
      const auto& s = it->output_shape;
      if (s.size() != 4 || it->calls != 1 || (spatial && s[2] * s[3] <= 1) || it->name.find(':') != std::string::npos)
        continue;  // "MODULE:softmax" is attention, not a feature map
      if (!best || it->position > best->position ||
          (it->position == best->position && it->position >= 0 && it->name.size() > best->name.size()))
        best = &*it;
    }
    if (best) return best->name;
  }
  throw InvalidArgument("found no layer with a spatial output [N, C, h, w] to take a CAM of; pass --layer NAME "
                        "(see `candela info MODEL`).");
}

std::pair<int64_t, int64_t> input_hw(const at::Tensor& x, const std::string& layout) {
  CANDELA_CHECK_T(ShapeMismatch, x.dim() == 4, "class activation maps need image inputs [N, C, H, W], got ",
                  shape_str(x.sizes()), ".");
  return layout == "NHWC" ? std::make_pair(x.size(1), x.size(2)) : std::make_pair(x.size(2), x.size(3));
}

at::Tensor to_grid(const at::Tensor& t, const std::vector<int64_t>& grid, const std::string& layer) {
  if (grid.empty()) {
    CANDELA_CHECK(t.dim() == 4, "layer '", layer, "' outputs ", shape_str(t.sizes()),
                  "; class activation maps need [N, C, h, w], or reshape_grid=h,w for token layers [N, T, C].");
    return t;
  }
  CANDELA_CHECK(t.dim() == 3, "reshape_grid folds token outputs [N, T, C], but layer '", layer, "' outputs ",
                shape_str(t.sizes()), ".");
  const int64_t h = grid[0], w = grid[1], tokens = t.size(1);
  CANDELA_CHECK(tokens == h * w || tokens == h * w + 1, "layer '", layer, "' has ", tokens, " tokens, which is not ",
                h, "x", w, " (+1 for a CLS token).");
  at::Tensor body = tokens == h * w ? t : t.slice(1, 1);
  return body.reshape({t.size(0), h, w, t.size(2)}).permute({0, 3, 1, 2});
}

at::Tensor min_max(const at::Tensor& maps) {
  const int64_t n = maps.size(0);
  at::Tensor flat = maps.reshape({n, -1});
  at::Tensor shifted = maps - std::get<0>(flat.min(1)).view({n, 1, 1});
  return shifted / (std::get<0>(shifted.reshape({n, -1}).max(1)).view({n, 1, 1}) + 1e-7);
}

at::Tensor resize(const at::Tensor& maps, int64_t h, int64_t w) {
  if (maps.size(-2) == h && maps.size(-1) == w) return maps;
  return at::upsample_bilinear2d(maps.unsqueeze(1), {h, w}, /*align_corners=*/false).squeeze(1);
}

}  // namespace detail

Attribution BaseCam::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const Model& model = ev.model();
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0);
  const auto [height, width] = detail::input_hw(x, model.input_spec().layout);
  std::vector<std::string> layers = cam_.layers;
  if (layers.empty()) layers.push_back(detail::default_cam_layer(model));
  const LayerTaps& taps = *LayerTaps::of(model, layers);
  const size_t count = layers.size();

  // One pass over the inputs: the layers' activations and, when needed, the target's
  // gradients with respect to them.
  std::vector<std::vector<at::Tensor>> acts(count), grads(count);
  std::vector<at::Tensor> outs;
  const bool need_grads = uses_gradients();
  ev.batched(name().c_str(), n, ev.batch_size(need_grads), [&](int64_t b, int64_t e) {
    at::Tensor sample = at::arange(b, e, at::TensorOptions().dtype(at::kLong));
    at::AutoGradMode mode(need_grads);
    // The input requires grad so that every layer depending on it does, parameters or not.
    auto run = taps.forward(need_grads ? x.slice(0, b, e).detach().requires_grad_(true) : x.slice(0, b, e));
    if (need_grads) {
      at::Tensor s = req.target.scores(run.output, sample);
      std::vector<at::Tensor> wrt;
      for (const auto& act : run.activations)
        if (act.requires_grad()) wrt.push_back(act);
      auto g = wrt.empty() ? std::vector<at::Tensor>{}
                           : torch::autograd::grad({s.sum()}, wrt, {}, false, false, /*allow_unused=*/true);
      for (size_t l = 0, j = 0; l < count; ++l) {
        at::Tensor gl = run.activations[l].requires_grad() ? g[j++] : at::Tensor();
        grads[l].push_back(gl.defined() ? gl : at::zeros_like(run.activations[l]));
      }
    }
    for (size_t l = 0; l < count; ++l) acts[l].push_back(run.activations[l].detach());
    outs.push_back(run.output.detach());
  });
  const at::Tensor output = at::cat(outs);
  const Target target = req.target.resolve(output);
  Attribution a;
  a.extra["layers"] = layers;

  std::vector<at::Tensor> maps;
  for (size_t l = 0; l < count; ++l) {
    LayerData d;
    d.name = layers[l];
    d.activations = detail::to_grid(at::cat(acts[l]), cam_.reshape_grid, layers[l]);
    if (need_grads) d.gradients = detail::to_grid(at::cat(grads[l]), cam_.reshape_grid, layers[l]);
    d.evaluator = &ev;
    d.request = &req;
    d.target = &target;
    d.scores = target.scores(output, at::arange(n, at::TensorOptions().dtype(at::kLong)));
    d.extra = &a.extra;
    at::Tensor m = layer_map(d);
    if (cam_.relu) m = m.clamp_min(0);
    if (cam_.normalize) m = detail::min_max(m);
    if (cam_.upsample) m = detail::resize(m, height, width);
    maps.push_back(m);
  }
  for (const auto& m : maps)
    CANDELA_CHECK(m.sizes() == maps[0].sizes(), "the layers' maps differ in size (", shape_str(m.sizes()), " vs ",
                  shape_str(maps[0].sizes()), "); keep upsample=true to combine several layers.");
  // pytorch-grad-cam's aggregation: ReLU, mean over layers, normalise (also for one layer).
  at::Tensor result = at::stack(maps, 1);
  if (cam_.relu) result = result.clamp_min(0);
  result = result.mean(1);
  if (cam_.normalize) result = detail::min_max(result);

  a.values = result.unsqueeze(1);
  a.spatial_map = true;
  a.output = output;
  a.targets = target.classes(output);
  return a;
}

}  // namespace candela
