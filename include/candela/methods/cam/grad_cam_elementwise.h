// Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): the positive part of each
// gradient-times-activation product, summed over channels:
//   map = sum_c max(dY/dA_c * A_c, 0).
// Unlike HiResCAM (no clamp) a channel cannot cancel another's evidence at a position, and
// unlike LayerCAM (max(dY/dA, 0) * A) a negative activation with a negative gradient counts.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class GradCamElementWise : public CamWith<GradCamElementWise, PlainCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "grad_cam_elementwise",
      .family = "cam",
      .description = "Positive part of gradient times activation, element by element, summed over channels.",
      .reference = "Gildenblat et al., PyTorch library for CAM methods (pytorch-grad-cam's GradCAMElementWise)"};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
