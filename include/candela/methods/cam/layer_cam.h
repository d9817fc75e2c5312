// LayerCAM (Jiang et al. 2021). map = sum_c relu(dY/dA_c) * A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class LayerCam : public CamWith<PlainCamOptions> {
 public:
  LayerCam() : LayerCam(Options{}) {}
  explicit LayerCam(Options options) : CamWith(std::move(options)) {}
  std::string name() const override { return "layer_cam"; }

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
