// Building blocks shared by the layer and neuron methods (not public API).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "candela/core/batching.h"
#include "candela/graph/taps.h"

namespace candela::detail {

// Option checks shared by the methods' validate(): exactly one layer; path options (a riemann
// quadrature needs at least `riemann_min_steps` steps, the others one); a neuron selector, as
// far as it can be checked before the layer's shape is known.
void check_one_layer(const std::vector<std::string>& layers, const char* method);
void check_neuron_selector(const std::vector<int64_t>& selector, const char* method);

// Model output and the tapped layer's output for every row of x, forward only (counted as
// model evaluations).
struct TappedOutputs {
  at::Tensor output;
  at::Tensor activation;
};
TappedOutputs tapped_forward(Evaluator& ev, const LayerTaps& taps, const char* stage, const at::Tensor& x);

// Rows [begin, end) of a straight-line path start + alpha * diff in step-major order (Captum's):
// row r is path point alphas[r / n] of sample r % n, n = start.size(0).
struct PathRows {
  at::Tensor points;  // [end - begin, ...]
  at::Tensor sample;  // int64 [end - begin]
  at::Tensor step;    // int64 [end - begin]
};
PathRows path_rows(const at::Tensor& start, const at::Tensor& diff, const at::Tensor& alphas, int64_t begin,
                   int64_t end);

// The gradient batch size for a stream of blocks of `granule` rows (whole blocks where possible).
int64_t aligned_batch(const Evaluator& ev, int64_t cap, int64_t granule);

// d sum(scores) / d wrt, or zeros where the scores do not depend on `wrt`.
at::Tensor grad_or_zeros(const at::Tensor& scores, const at::Tensor& wrt);

// The flat position of `selector` in a layer's per-sample output of shape `per_sample`;
// InvalidArgument when it has the wrong length or an index is out of range.
int64_t neuron_offset(const std::vector<int64_t>& selector, at::IntArrayRef per_sample, const std::string& layer,
                      const char* method);
// The neuron's value in each row of `activation` [B, ...] -> [B].
at::Tensor select_neuron(const at::Tensor& activation, int64_t offset);

}  // namespace candela::detail
