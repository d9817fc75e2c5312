// Forward arguments with a row per sample (not public API): explain and evaluate run such
// samples one at a time, each with its own row (Model::with_forward_args).
#pragma once

#include <cstdint>

#include "candela/core/model.h"

namespace candela::detail {

// True when a forward argument of `model` has a row per sample; ShapeMismatch when its rows
// are neither one nor `samples`.
bool per_sample_forward_args(const Model& model, int64_t samples);
// `model` with each per-sample forward argument cut to samples [begin, end); one-row ones stay.
Model forward_args_of_samples(const Model& model, int64_t begin, int64_t end);

}  // namespace candela::detail
