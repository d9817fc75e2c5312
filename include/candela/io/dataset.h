// A data set to evaluate or audit: samples, the classes to explain, ground-truth masks, names.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace candela {

struct InputSpec;

struct Dataset {
  at::Tensor inputs;   // [N, ...]
  at::Tensor labels;   // int64 [N] classes to explain; undefined: the model's top-1 prediction
  at::Tensor masks;    // ground truth [N, H, W] or [N, ...]; undefined if none
  std::vector<std::string> ids;  // one name per sample (file names); default "0", "1", ...
};

// `path`: an array file (.npy, .csv) or a folder of images (.png, .jpg, .jpeg, .bmp, sorted by
// name; the names become the ids), read as `spec` describes. `labels` and `masks` are optional
// .npy files (labels: integer class indices). max_samples > 0 keeps the first N samples.
Dataset load_dataset(const std::string& path, const std::string& labels, const std::string& masks,
                     const InputSpec& spec, int64_t max_samples = 0);

}  // namespace candela
