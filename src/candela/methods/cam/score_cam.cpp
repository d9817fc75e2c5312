#include "candela/methods/cam/score_cam.h"

#include <ATen/ATen.h>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/options.h"
#include "cam_util.h"

namespace candela {

void ScoreCamOptions::validate() const {
  validate_cam();
  CANDELA_CHECK(top_k >= 0, "top_k must be >= 0 (0: every channel), got ", top_k, ".");
}

at::Tensor ScoreCam::layer_map(const LayerData& d) const {
  Evaluator& ev = *d.evaluator;
  const at::Tensor& x = d.request->inputs;
  const std::string layout = ev.model().input_spec().layout;
  const auto [height, width] = detail::input_hw(x, layout);
  const at::Tensor& acts = d.activations;
  const int64_t n = acts.size(0), channels = acts.size(1);

  const int64_t k = options_.top_k > 0 ? std::min(options_.top_k, channels) : channels;
  at::Tensor chosen = k == channels ? at::arange(channels, at::TensorOptions().dtype(at::kLong)).expand({n, channels})
                                    : std::get<1>(acts.reshape({n, channels, -1}).var(2).topk(k, 1));
  chosen = chosen.to(at::kLong).contiguous().to(x.device());

  // Row r masks sample r / k with its channel chosen[r / k][r % k].
  at::Tensor scores = at::empty({n * k}, x.options());
  ev.forward(
      "score_cam", n * k,
      [&](int64_t b, int64_t e) {
        at::Tensor r = at::arange(b, e, x.options().dtype(at::kLong));
        at::Tensor sample = r.div(k, "floor");
        at::Tensor channel = chosen.reshape({-1}).index_select(0, r);
        // Each batch's masks: the channel upsampled like torch.nn.UpsamplingBilinear2d
        // (align_corners) and scaled to [0, 1].
        at::Tensor maps = acts.reshape({n * channels, 1, acts.size(2), acts.size(3)})
                              .index_select(0, sample * channels + channel);
        at::Tensor mask = at::upsample_bilinear2d(maps, {height, width}, /*align_corners=*/true).squeeze(1);
        at::Tensor flat = mask.reshape({e - b, -1});
        at::Tensor lo = std::get<0>(flat.min(1)).view({-1, 1, 1}), hi = std::get<0>(flat.max(1)).view({-1, 1, 1});
        mask = (mask - lo) / (hi - lo + 1e-8);  // [B, H, W]
        mask = layout == "NHWC" ? mask.unsqueeze(-1) : mask.unsqueeze(1);
        return Rows{x.index_select(0, sample) * mask, sample, {}};
      },
      [&](int64_t b, int64_t e, const Rows& rows, const at::Tensor& out) {
        scores.slice(0, b, e).copy_(d.target->scores(out, rows.sample));
      });
  at::Tensor weights = at::zeros({n, channels}, x.options());
  weights.scatter_(1, chosen, at::softmax(scores.view({n, k}), 1));
  (*d.extra)["channels_scored"] = k;
  return weighted_sum(weights, acts);
}

}  // namespace candela
