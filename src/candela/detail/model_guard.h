// Puts a model in the state attributions need and restores the caller's state when it goes
// out of scope, exception or not: eval mode, and parameters that require grad. The latter
// is for speed: on Debian's LibTorch 1.13 a convolution whose weight does not require grad
// takes a slow backward path for the input gradient (resnet18 224x224: 500 ms instead of
// 25 ms per sample). torch::autograd::grad never writes .grad, so weights stay untouched.
#pragma once

#include <ATen/core/ivalue.h>

#include <vector>

#include "candela/core/model.h"

namespace candela::detail {

class ModelGuard {
 public:
  explicit ModelGuard(const Model& model);
  ~ModelGuard();
  ModelGuard(const ModelGuard&) = delete;
  ModelGuard& operator=(const ModelGuard&) = delete;

 private:
  torch::jit::Module* module_;
  std::vector<c10::intrusive_ptr<c10::ivalue::Object>> was_training_;
  std::vector<at::Tensor> no_grad_;
};

}  // namespace candela::detail
