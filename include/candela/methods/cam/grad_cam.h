// Grad-CAM (Selvaraju et al. 2017). Channel weights are the spatial mean of the target's
// gradient: w_c = mean_ij dY/dA_cij; map = sum_c w_c A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class GradCam : public CamWith<GradCam, PlainCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "grad_cam",
      .family = "cam",
      .description = "Layer activations weighted by the spatial mean of their gradients.",
      .reference = "Selvaraju et al. 2017, Grad-CAM"};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
