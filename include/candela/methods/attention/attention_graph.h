// The arithmetic of attention-graph explanations, apart from any model: fusing heads, attention
// rollout (Abnar & Zuidema 2020), the gradient-weighted rollout of Chefer, Gur & Wolf 2021, and
// attention flow as a maximum flow through the layered attention graph (Abnar & Zuidema 2020).
// Attention maps are probabilities [N, H, L, L] (rows: queries, columns: keys), one per layer,
// first layer first.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace candela {

class Model;

namespace detail {

// [N, H, L, L] -> [N, L, L]: the heads' mean, max or min.
at::Tensor fuse_heads(const at::Tensor& attention, const std::string& fusion);

// The residual-augmented, row-normalised map of one layer: Â = (A' + I) / rowsum, where A' is
// `fused` with its lowest `discard_ratio` share of entries set to zero (per sample, never the
// [0, 0] entry; jacobgil/vit-explain's choice). With discard_ratio = 0 this is 0.5 A + 0.5 I.
at::Tensor residual_attention(const at::Tensor& fused, double discard_ratio);

// Â_L ... Â_2 Â_1 [N, L, L]: row i says how much each input token flows into position i at the top.
at::Tensor attention_rollout(const std::vector<at::Tensor>& attention, const std::string& fusion,
                             double discard_ratio);

// Chefer et al. 2021 (generic rule, eq. 5-6): R = I; per layer R += E_h[(dA ⊙ A)^+] R, where dA
// is the gradient of the target score with respect to A.
at::Tensor gradient_rollout(const std::vector<at::Tensor>& attention, const std::vector<at::Tensor>& gradients);

// The maximum flow from every input token (layer 0) to token `query` at the top of the layered
// graph whose edges layer l -> l+1 have capacities residual[l][n][query_pos][key_pos]
// ([N, L, L] each, first layer first): [N, L] (unnormalised; Dinic's algorithm, doubles).
at::Tensor attention_flow(const std::vector<at::Tensor>& residual, int64_t query);

// The attention layers of a model: every module of type Softmax (or an ONNX Softmax node) whose
// output is [1, H, L, L] for one sample, in execution order. InvalidArgument when there is none.
std::vector<std::string> find_attention_layers(const Model& model);

// The attention maps themselves, for display (`candela explain` with an attention method): one
// forward pass without gradients through taps at `layers` (empty: find_attention_layers),
// [N, layers, H, L, L], first layer first.
at::Tensor read_attention_maps(const Model& model, const std::vector<std::string>& layers, const at::Tensor& x);

}  // namespace detail
}  // namespace candela
