// Grad-CAM++ (Chattopadhyay et al. 2018). w_c = sum_ij relu(g_cij) a_cij with
// a = g^2 / (2 g^2 + sum_ij A_c * g^3 + 1e-6) (0 where g = 0); map = sum_c w_c A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class GradCamPlusPlus : public CamWith<GradCamPlusPlus, PlainCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "grad_cam_plus_plus",
      .family = "cam",
      .description = "Grad-CAM with higher-order weights for several instances of a class.",
      .reference = "Chattopadhyay et al. 2018, Grad-CAM++"};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
