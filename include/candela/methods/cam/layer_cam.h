// LayerCAM (Jiang et al. 2021). map = sum_c relu(dY/dA_c) * A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class LayerCam : public CamWith<LayerCam, PlainCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "layer_cam",
      .family = "cam",
      .description = "Positive gradients times activations, position by position.",
      .reference = "Jiang et al. 2021, LayerCAM"};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
