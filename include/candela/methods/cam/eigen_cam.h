// Eigen-CAM (Muhammad & Yeasin 2020). The activations projected on their first principal
// component; no gradients, no target (the sign is the SVD's).
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class EigenCam : public CamWith<PlainCamOptions> {
 public:
  EigenCam() : EigenCam(Options{}) {}
  explicit EigenCam(Options options) : CamWith(std::move(options)) {}
  std::string name() const override { return "eigen_cam"; }

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
  bool uses_gradients() const override { return false; }
};

}  // namespace candela
