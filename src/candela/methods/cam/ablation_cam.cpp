#include "candela/methods/cam/ablation_cam.h"

#include <ATen/ATen.h>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/graph/taps.h"
#include "cam_util.h"

namespace candela {

at::Tensor AblationCam::layer_map(const LayerData& d) const {
  CANDELA_CHECK(options_.reshape_grid.empty(), "ablation_cam on token layers (reshape_grid) is not supported; "
                "use score_cam or grad_cam there.");
  Evaluator& ev = *d.evaluator;
  const at::Tensor& x = d.request->inputs;
  const at::Tensor& acts = d.activations;
  const int64_t n = acts.size(0), channels = acts.size(1);
  const LayerTaps& taps = *LayerTaps::of(ev.model(), {d.name});
  const bool suffix = options_.suffix_execution && taps.can_cut();
  (*d.extra)["suffix_execution"] = suffix;
  if (options_.suffix_execution && !taps.can_cut()) (*d.extra)["suffix_execution_problem"] = taps.cut_problem();

  // pytorch-grad-cam's ablation value: 0 where the sample's minimum activation is 0, else
  // far below it.
  at::Tensor minimum = std::get<0>(acts.reshape({n, -1}).min(1));
  at::Tensor value = at::where(minimum == 0, at::zeros_like(minimum), minimum - 1e7);

  std::shared_ptr<const LayerTaps::Prefix> prefix;
  if (suffix) prefix = taps.run_prefix(x);
  at::Tensor ablated = at::empty({n * channels}, x.options());
  // Row r ablates channel r % C of sample r / C.
  auto body = [&](int64_t b, int64_t e) {
    at::NoGradGuard no_grad;
    at::Tensor r = at::arange(b, e, at::TensorOptions().dtype(at::kLong));
    at::Tensor sample = r.div(channels, "floor"), channel = r.remainder(channels);
    at::Tensor repl = acts.index_select(0, sample).clone();
    at::Tensor one_hot = at::one_hot(channel, channels).to(repl.dtype()).view({e - b, channels, 1, 1});
    repl = repl * (1 - one_hot) + one_hot * value.index_select(0, sample).view({e - b, 1, 1, 1});
    at::Tensor out = suffix ? taps.run_suffix(*prefix, repl, sample)
                            : taps.forward(x.index_select(0, sample.to(x.device())), {repl}).output;
    ablated.slice(0, b, e).copy_(d.target->scores(out, sample));
  };
  ev.batched("ablation_cam", n * channels, Evaluator::Automatic{false}, body, /*evaluations=*/!suffix);
  at::Tensor original = d.scores.view({n, 1});
  at::Tensor weights = (original - ablated.view({n, channels})) / original;
  return weighted_sum(weights, acts);
}

}  // namespace candela
