// Turning user files into model inputs, and model inputs back into pictures.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "candela/core/model.h"

namespace candela {

struct LoadedInput {
  at::Tensor batch;    // [N, ...] float32, in the model's input space (normalised)
  at::Tensor display;  // [N, C, H, W] in [0, 1] for image layouts, else undefined
  std::vector<std::string> feature_names;  // tabular inputs: from a CSV header, else empty
};

// An image file (resized to the spec, scaled to its range, normalised with its mean/std,
// laid out as NCHW or NHWC), a .npy array (used as given: [N, ...] or one sample [...]), or
// a numeric .csv of rows (tabular; a header row names the features).
LoadedInput load_input(const std::string& path, const InputSpec& spec);

// Undoes the spec's normalisation and range for image batches: [N, C, H, W] in [0, 1].
at::Tensor to_display(const at::Tensor& batch, const InputSpec& spec);

}  // namespace candela
