// Named colormaps: values in [0, 1] to RGB colours.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace candela {

// "bwr" (blue-white-red, diverging, as matplotlib's), "coolwarm" (Moreland's diverging map, as
// matplotlib's), "gray", "inferno", "jet" (matplotlib's), "viridis".
std::vector<std::string> colormap_names();

// Throws InvalidArgument, listing the valid names, when `name` is not a colormap.
void check_colormap_name(const std::string& name);

// Maps float values (any shape, typically [H, W]) to uint8 RGB with a trailing dimension of 3.
// Values are clamped to [0, 1]; 0.5 maps exactly to a diverging map's centre colour.
// NaN values throw InvalidArgument.
at::Tensor apply_colormap(const at::Tensor& values01, const std::string& name);

}  // namespace candela
