// Small tensor helpers shared by the library's sources (not public API).
#pragma once

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace candela::detail {

// "[2, 3, 224, 224]"
std::string shape_str(at::IntArrayRef sizes);
// Nested JSON lists of a tensor's values (as doubles; integers stay integers).
nlohmann::json tensor_to_json(const at::Tensor& t);
// View of `v` [N] shaped [N, 1, 1, ...] to broadcast against `like` [N, ...].
at::Tensor per_row(const at::Tensor& v, const at::Tensor& like);
// A CPU generator seeded from (seed, stream): the same stream gives the same numbers
// whatever the batch, which makes sampled methods batch-invariant.
at::Generator seeded_generator(uint64_t seed, uint64_t stream);
// Sum over every dimension but the first: [N, ...] -> [N].
at::Tensor sum_per_sample(const at::Tensor& t);
// Token-id models (input layout NL) take int64 ids. Candela carries ids as floating-point values
// (methods perturb, batch and check inputs as floats; ids below 2^24 are exact in float32) and
// rounds and casts them here, at the model's door. Other inputs pass through unchanged.
at::Tensor model_input(const at::Tensor& x, bool token_ids);
// The last line of a LibTorch error: the Python-level message without the TorchScript traceback.
std::string torch_message(const std::exception& e);

}  // namespace candela::detail
