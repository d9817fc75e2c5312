// Puts a model in the state attributions need (eval mode, parameters not requiring
// gradients) and restores the caller's state when it goes out of scope, exception or not.
#pragma once

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
  std::vector<bool> training_;
  std::vector<bool> requires_grad_;
};

}  // namespace candela::detail
