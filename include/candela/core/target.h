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
  // Segmentation: the sum of class `cls`'s scores over a region of an output [N, C, H, W]
  // (pytorch-grad-cam's SemanticSegmentationTarget). `mask` is [H, W] (or [N, H, W]) of weights.
  static Target region(int64_t cls, at::Tensor mask);
  // The same over the box rows [y0, y1) and columns [x0, x1).
  static Target box(int64_t cls, int64_t y0, int64_t x0, int64_t y1, int64_t x1);
  // One element of each sample's output, e.g. {box, 4 + class} of a detector's [N, boxes, 4 + C].
  static Target element(std::vector<int64_t> index);
  // "top1", "3", or "1,4,2" (one per sample); "region:CLASS:mask.npy" or
  // "region:CLASS:y0,x0,y1,x1" (segmentation); "element:i,j,..." (an element of a
  // multi-dimensional output). Class names are accepted when `class_names` is given.
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
