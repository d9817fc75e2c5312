// Grad-CAM (Selvaraju et al. 2017). Channel weights are the spatial mean of the target's
// gradient: w_c = mean_ij dY/dA_cij; map = sum_c w_c A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class GradCam : public CamWith<PlainCamOptions> {
 public:
  GradCam() : GradCam(Options{}) {}
  explicit GradCam(Options options) : CamWith(std::move(options)) {}
  std::string name() const override { return "grad_cam"; }

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
