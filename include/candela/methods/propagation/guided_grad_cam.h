// Guided Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks
// via Gradient-based Localization"). Definition, as Captum's GuidedGradCam: the layer's
// Grad-CAM map relu(sum_c mean_ij(dY/dA_cij) A_c), upsampled to the input's height and width
// (nearest neighbour), times guided backpropagation, channel by channel.
#pragma once

#include <string>
#include <vector>

#include "candela/core/method.h"

namespace candela {

struct GuidedGradCamOptions {
  std::vector<std::string> layers;        // one layer; empty: the last with a spatial output
  std::string interpolate_mode = "nearest";  // Captum's default
  template <class V> void visit(V& v) {
    v("layers", layers, "The Grad-CAM layer (--layer); default: the spatial map [N, C, h, w] (h * w > 1) the forward computes last, e.g. layer4.1 of a ResNet-18.");
    v("interpolate_mode", interpolate_mode, "Upsampling of the map to the input: nearest (Captum) or bilinear.",
      std::vector<std::string>{"nearest", "bilinear"});
  }
  void validate() const;
};

class GuidedGradCam : public Method<GuidedGradCam, GuidedGradCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "guided_grad_cam",
      .family = "propagation",
      .description = "Grad-CAM map (nearest-upsampled) times guided backpropagation.",
      .reference = "Selvaraju et al. 2017, Grad-CAM"};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
