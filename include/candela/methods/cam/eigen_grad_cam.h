// Eigen-Grad-CAM (pytorch-grad-cam). The first principal component of gradient times
// activation.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class EigenGradCam : public CamWith<PlainCamOptions> {
 public:
  EigenGradCam() : EigenGradCam(Options{}) {}
  explicit EigenGradCam(Options options) : CamWith(std::move(options)) {}
  std::string name() const override { return "eigen_grad_cam"; }

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
