// HiResCAM (Draelos & Carin 2020). Element-wise gradient times activation, summed over
// channels: map = sum_c dY/dA_c * A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class HiResCam : public CamWith<HiResCam, PlainCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "hires_cam",
      .family = "cam",
      .description = "Element-wise gradient times activation, summed over channels.",
      .reference = "Draelos & Carin 2020, Use HiResCAM instead of Grad-CAM"};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
