// Eigen-CAM (Muhammad & Yeasin 2020). The activations projected on their first principal
// component; no gradients, no target (the sign is the SVD's).
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class EigenCam : public CamWith<EigenCam, PlainCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "eigen_cam",
      .family = "cam",
      .description = "First principal component of the layer's activations (no target).",
      .reference = "Muhammad & Yeasin 2020, Eigen-CAM",
      .uses_target = false};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
  bool uses_gradients() const override { return false; }
};

}  // namespace candela
