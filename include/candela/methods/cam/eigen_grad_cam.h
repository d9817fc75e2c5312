// Eigen-Grad-CAM (pytorch-grad-cam). The first principal component of gradient times
// activation.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class EigenGradCam : public CamWith<EigenGradCam, PlainCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "eigen_grad_cam",
      .family = "cam",
      .description = "First principal component of gradient x activation.",
      .reference = "pytorch-grad-cam (Gildenblat et al.), EigenGradCAM"};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
