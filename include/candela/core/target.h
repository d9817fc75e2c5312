// Target: which scalar of the model's output an attribution explains. A class index, one
// index per sample, the top-1 class of each sample, or any differentiable function of the
// output (a segmentation region, a detection score, a regression output).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

namespace candela {

class Target {
 public:
  // output [B, ...] -> scores [B]; must be differentiable and row-wise.
  using ScoreFunction = std::function<at::Tensor(const at::Tensor& output)>;

  static Target top1();
  static Target index(int64_t class_index);
  static Target indices(std::vector<int64_t> per_sample);
  static Target function(ScoreFunction fn, std::string description);
  // "top1", "3", or "1,4,2" (one per sample). Class names are accepted when `class_names` is given.
  static Target parse(const std::string& text, const std::vector<std::string>& class_names = {});

  enum class Kind { kTop1, kIndex, kIndices, kFunction };
  Kind kind() const { return kind_; }
  std::string describe() const;

  // Scores of each row of `output` [B, ...]: row r belongs to sample `sample_of_row[r]`.
  // Class targets on outputs with more than two dimensions sum the class's channel.
  // Throws InvalidArgument when a class index is out of range.
  at::Tensor scores(const at::Tensor& output, const at::Tensor& sample_of_row) const;
  // The class index explained for each of `n` samples, given the output at the samples
  // (needed for top1); empty for function targets.
  std::vector<int64_t> classes(const at::Tensor& output_at_samples) const;
  // Top-1 resolved against the output at the samples: the same target as fixed indices.
  Target resolve(const at::Tensor& output_at_samples) const;
  // For methods that expand each sample into several rows: sample i of the result is sample
  // `source[i]` of this target.
  Target gather(const std::vector<int64_t>& source) const;

 private:
  Kind kind_ = Kind::kTop1;
  std::vector<int64_t> indices_;
  ScoreFunction fn_;
  std::string description_;
};

}  // namespace candela
