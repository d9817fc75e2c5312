// Baseline (reference input): what "absence of the feature" means for path and SHAP-style
// methods. Zeros, a constant, a blurred copy of the input, uniform noise, a given tensor,
// or a distribution of samples (for GradientSHAP / expected gradients).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace candela {

class Baseline {
 public:
  static Baseline zeros();
  static Baseline constant(double value);
  static Baseline blurred(double sigma);                 // Gaussian blur over H and W
  static Baseline uniform(double low, double high);      // seeded by the method's seed
  static Baseline tensor(at::Tensor value);              // [...], [1, ...] or [N, ...]
  static Baseline distribution(at::Tensor samples);      // [M, ...] reference samples
  // "zeros", "constant:0.5", "blur:3", "uniform:0,1", or a path to a .npy file (a tensor;
  // with "dist:" in front, a distribution).
  static Baseline parse(const std::string& text);

  enum class Kind { kZeros, kConstant, kBlurred, kUniform, kTensor, kDistribution };
  Kind kind() const { return kind_; }
  bool is_distribution() const { return kind_ == Kind::kDistribution; }
  std::string describe() const;

  // One reference per input row, the shape of `inputs` [N, ...]. `layout` tells where the
  // spatial dimensions are for blurring ("NCHW" or "NHWC"). A distribution is refused here.
  at::Tensor for_inputs(const at::Tensor& inputs, const std::string& layout, uint64_t seed) const;
  // The reference distribution [M, ...]: the samples of a distribution, or one reference
  // per input for the other kinds.
  at::Tensor samples(const at::Tensor& inputs, const std::string& layout, uint64_t seed) const;
  // The baseline of sample i alone, for explaining inputs [N, ...] one sample at a time: a
  // tensor with one reference per input gives its row i; every other kind is itself.
  Baseline for_sample(int64_t i, const at::Tensor& inputs) const;

 private:
  Kind kind_ = Kind::kZeros;
  double a_ = 0.0, b_ = 0.0;
  at::Tensor value_;
};

}  // namespace candela
