// Concept relevance propagation (Achtibat et al., "From attribution maps to human-understandable
// explanations through Concept Relevance Propagation", Nature Machine Intelligence 2023; zennit-crp)
// on Candela's LRP rule graphs: the relevance R_L reaching a layer L (its channels' relevances
// R_c = Σ_positions R_L[c]) and the conditional heatmaps R(x | c): the same backward pass from L to
// the input with the relevance at L masked to channel c (zennit-crp's conditions
// {layer: [c]}). Because every rule is linear in the incoming relevance, the channels' heatmaps
// sum to the plain LRP heatmap, and where the layers below conserve relevance (no biases, or
// rules that ignore them) each heatmap sums to its channel's relevance.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "candela/methods/propagation/lrp.h"

namespace candela {

class Model;

struct CrpResult {
  at::Tensor channel_relevance;  // [N, C] float64: R_c per sample
  at::Tensor heatmaps;           // [N, K, ...input]: R(x | c) for the K requested channels
  at::Tensor lrp;                // [N, ...input]: the plain LRP heatmap (all channels)
  at::Tensor output;             // [N, classes]
};
// `targets`: one class per sample (int64 [N]). `options`: the LRP composite and rule parameters.
CrpResult crp(const Model& model, const std::string& layer, const std::vector<int64_t>& channels,
              const at::Tensor& inputs, const at::Tensor& targets, const LrpOptions& options = {});

// Reference samples (CRP's "relevance maximisation"): the k rows of `inputs` in which channel
// `channel` of `layer` receives the most relevance for each row's target. Returns {indices, R_c}.
std::pair<at::Tensor, at::Tensor> crp_reference_samples(const Model& model, const std::string& layer, int64_t channel,
                                                        const at::Tensor& inputs, const at::Tensor& targets,
                                                        int64_t k, const LrpOptions& options = {},
                                                        int64_t batch_size = 32);

}  // namespace candela
