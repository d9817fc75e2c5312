// Turning user files into model inputs, and model inputs back into pictures.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "candela/core/model.h"
#include "candela/text/tokenizer.h"

namespace candela {

struct LoadedInput {
  at::Tensor batch;    // [N, ...] float32, in the model's input space (normalised)
  at::Tensor display;  // [N, C, H, W] in [0, 1] for image layouts, else undefined
  std::vector<std::string> feature_names;  // tabular inputs: from a CSV header, else empty
  std::vector<Encoding> tokens;            // token inputs (layout NL): one per sample, else empty
  // Tabular inputs: rows of the training data (optional); explanations in words place each
  // feature's value at its percentile among them.
  at::Tensor reference;
};

// An image file (resized to the spec, scaled to its range, normalised with its mean/std,
// laid out as NCHW or NHWC), a .npy array (used as given: [N, ...] or one sample [...]), or
// a numeric .csv of rows (tabular; a header row names the features).
LoadedInput load_input(const std::string& path, const InputSpec& spec);

// Fills in an image layout that the spec leaves open from a batch's shape [N, a, b, c]: float
// values with a in {1, 3, 4} smaller than b and c are NCHW; c in {1, 3, 4} smaller than a and b
// is NHWC. The per-sample shape is filled in too when the spec has none. Returns a sentence that
// says what was inferred (for the user to see), or "" when nothing was: the layout was given, the
// batch is not 4-D, or its shape fits neither (then code that needs a layout asks for --layout).
std::string infer_layout(InputSpec& spec, const at::Tensor& batch);

// Undoes the spec's normalisation and range for image batches: [N, C, H, W] in [0, 1].
at::Tensor to_display(const at::Tensor& batch, const InputSpec& spec);

}  // namespace candela
