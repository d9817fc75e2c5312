// Helpers shared by the CAM methods (not public API).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "candela/core/model.h"

namespace candela::detail {

// The last layer whose output is [N, C, h, w] and that runs once.
std::string default_cam_layer(const Model& model);
// The input's (height, width) for its layout.
std::pair<int64_t, int64_t> input_hw(const at::Tensor& x, const std::string& layout);
// [N, C, h, w] from a layer's output (token outputs folded into a grid when asked).
at::Tensor to_grid(const at::Tensor& t, const std::vector<int64_t>& grid, const std::string& layer);
// Per-image min-max scaling of maps [N, h, w] (pytorch-grad-cam's scale_cam_image).
at::Tensor min_max(const at::Tensor& maps);
// Bilinear resize of maps [N, h, w] (align_corners = false, like cv2.resize).
at::Tensor resize(const at::Tensor& maps, int64_t h, int64_t w);

}  // namespace candela::detail
