// Building blocks shared by the gradient methods (not public API).
#pragma once

#include <ATen/ATen.h>

#include "candela/core/batching.h"
#include "candela/core/target.h"

namespace candela::detail {

// Rows [begin, end) of an explicit tensor, each its own sample.
Evaluator::MakeRows slice_rows(const at::Tensor& x);

// Model output for every row of x [N, ...] (forward only).
at::Tensor forward_all(Evaluator& ev, const char* stage, const at::Tensor& x);

// Gradients of the target at x, and the output there, in one pass.
struct GradientsAt {
  at::Tensor grads;
  at::Tensor output;
};
GradientsAt gradients_at(Evaluator& ev, const char* stage, const at::Tensor& x, const Target& target);

}  // namespace candela::detail
