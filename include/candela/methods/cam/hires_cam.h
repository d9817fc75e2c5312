// HiResCAM (Draelos & Carin 2020). Element-wise gradient times activation, summed over
// channels: map = sum_c dY/dA_c * A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class HiResCam : public CamWith<PlainCamOptions> {
 public:
  HiResCam() : HiResCam(Options{}) {}
  explicit HiResCam(Options options) : CamWith(std::move(options)) {}
  std::string name() const override { return "hires_cam"; }

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
