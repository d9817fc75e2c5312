#include "candela/methods/cam/grad_cam_elementwise.h"

#include <ATen/ATen.h>

namespace candela {

at::Tensor GradCamElementWise::layer_map(const LayerData& d) const {
  return (d.gradients * d.activations).clamp_min(0).sum(1);
}

}  // namespace candela
