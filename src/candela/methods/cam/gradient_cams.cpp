// The CAMs defined by activations and gradients of one pass (pytorch-grad-cam's formulas).
#include <ATen/ATen.h>

#include "candela/core/options.h"
#include "candela/methods/cam/eigen_cam.h"
#include "candela/methods/cam/eigen_grad_cam.h"
#include "candela/methods/cam/grad_cam.h"
#include "candela/methods/cam/grad_cam_plus_plus.h"
#include "candela/methods/cam/hires_cam.h"
#include "candela/methods/cam/layer_cam.h"
#include "candela/methods/cam/xgrad_cam.h"

namespace candela {


at::Tensor GradCam::layer_map(const LayerData& d) const {
  return weighted_sum(d.gradients.mean({2, 3}), d.activations);
}

at::Tensor HiResCam::layer_map(const LayerData& d) const { return (d.gradients * d.activations).sum(1); }

at::Tensor GradCamPlusPlus::layer_map(const LayerData& d) const {
  const at::Tensor& g = d.gradients;
  at::Tensor g2 = g * g, g3 = g2 * g;
  at::Tensor sum_a = d.activations.sum({2, 3}, /*keepdim=*/true);
  at::Tensor aij = g2 / (2 * g2 + sum_a * g3 + 1e-6);
  aij = at::where(g != 0, aij, at::zeros_like(aij));
  at::Tensor weights = (g.clamp_min(0) * aij).sum({2, 3});
  return weighted_sum(weights, d.activations);
}

at::Tensor XGradCam::layer_map(const LayerData& d) const {
  at::Tensor sum_a = d.activations.sum({2, 3}, /*keepdim=*/true);
  at::Tensor weights = (d.gradients * d.activations / (sum_a + 1e-7)).sum({2, 3});
  return weighted_sum(weights, d.activations);
}

at::Tensor LayerCam::layer_map(const LayerData& d) const { return (d.gradients.clamp_min(0) * d.activations).sum(1); }

at::Tensor EigenCam::layer_map(const LayerData& d) const { return first_principal_projection(d.activations); }

at::Tensor EigenGradCam::layer_map(const LayerData& d) const {
  return first_principal_projection(d.gradients * d.activations);
}

}  // namespace candela
