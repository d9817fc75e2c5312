// XGrad-CAM (Fu et al. 2020). w_c = sum_ij g_cij A_cij / (sum_ij A_cij + 1e-7);
// map = sum_c w_c A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class XGradCam : public CamWith<PlainCamOptions> {
 public:
  XGradCam() : XGradCam(Options{}) {}
  explicit XGradCam(Options options) : CamWith(std::move(options)) {}
  std::string name() const override { return "xgrad_cam"; }

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
