// Score-CAM (Wang et al. 2020), as pytorch-grad-cam computes it: each channel's activation map,
// upsampled to the input (bilinear, align_corners) and scaled to [0, 1], masks the input; the
// target's score on each masked input, softmaxed over channels, weights the channels:
// map = sum_c softmax(s)_c A_c. One forward pass per channel, batched by the evaluator.
// top_k > 0 keeps only the k channels whose activation maps vary most (Faster Score-CAM,
// Wang et al. 2020b), the others weigh 0.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

struct ScoreCamOptions : CamOptions {
  int64_t top_k = 0;
  template <class V> void visit(V& v) {
    visit_cam(v);
    v("top_k", top_k, "Score only the k channels with the largest activation variance (0: all).");
  }
  void validate() const;
};

class ScoreCam : public CamWith<ScoreCam, ScoreCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "score_cam",
      .family = "cam",
      .description = "Channels weighted by the target's score on the input masked by each channel.",
      .reference = "Wang et al. 2020, Score-CAM"};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
  bool uses_gradients() const override { return false; }
};

}  // namespace candela
