// CRAFT, concept recursive activation factorisation (Fel et al., "CRAFT: Concept Recursive
// Activation FacTorization for Explainability", CVPR 2023; deel-ai/Craft's craft_torch.py), its
// first level: concepts discovered automatically for one class, and their importance.
//   1. Patches: each image is cut into patch_size squares with stride int(0.8 * patch_size)
//      (torch unfold), each resized back to the image size (nearest, as F.interpolate's default).
//   2. Their activations at a layer (spatially averaged when 4-D) must be non-negative (after a
//      ReLU); A [P, F] ≈ U W is factorised by non-negative matrix factorisation with `rank`
//      concepts: W [rank, F] is the concept bank, U [P, rank] each patch's concept coefficients.
//      CRAFT uses scikit-learn's NMF; neither OpenCV nor ATen has one, so Candela runs Lee &
//      Seung's multiplicative updates for the Frobenius loss with ATen ops (seeded random init
//      scaled as scikit-learn's init="random").
//   3. Importance: for each image, the coefficients U(x) of its activation map (each position
//      solved with W fixed) are multiplied by masks M from an unscrambled Sobol sequence (nb_design
//      points per matrix A, B and the d replicated C_i, CRAFT's ScipySobolSequence), the layer is
//      rebuilt as (M ⊙ U) W and run through the rest of the network; Jansen's estimator gives each
//      concept's total Sobol index ST_i = E[(f(A) - f(C_i))²] / (2 Var[f(A), f(B)]), averaged
//      over the images.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "candela/core/options.h"
#include "candela/core/progress.h"

namespace candela {

class Model;

struct NmfResult {
  at::Tensor u, w;            // [P, r] and [r, F], non-negative
  double relative_error = 0;  // |A - U W|_F / |A|_F
  int64_t iterations = 0;
};
// A [P, F] >= 0 ≈ U W with multiplicative updates, stopping after max_iter or when the
// relative error improves by less than tol over 10 iterations.
NmfResult nmf(const at::Tensor& a, int64_t rank, int64_t max_iter = 1000, double tol = 1e-6, int64_t seed = 0);
// U >= 0 minimising |A - U W|_F for a fixed W (multiplicative updates on U only).
at::Tensor nmf_transform(const at::Tensor& a, const at::Tensor& w, int64_t max_iter = 500);

// The first n points of the unscrambled Sobol sequence in `dim` dimensions (LibTorch's
// SobolEngine; the first point is 0), [n, dim] float64 in [0, 1).
at::Tensor sobol_sequence(int64_t dim, int64_t n);
// CRAFT's masks for d dimensions: [A; B; C_1; ...; C_d], each nb_design rows, [nb_design*(d+2), d].
at::Tensor sobol_masks(int64_t d, int64_t nb_design);
// Jansen's total Sobol indices [d] from the outputs [nb_design*(d+2)] of those masks.
at::Tensor jansen_total_indices(const at::Tensor& outputs, int64_t d, int64_t nb_design);

struct CraftOptions {
  int64_t number_of_concepts = 20;  // CRAFT's default
  int64_t patch_size = 64;          // CRAFT's default (for 224-px images)
  int64_t nb_design = 32;           // Sobol design size (CRAFT's estimate_importance default)
  int64_t max_iter = 1000;          // NMF iterations
  int64_t batch_size = 64;          // patches per forward pass
  int64_t seed = 0;                 // NMF init
  template <class V> void visit(V& v) {
    v("number_of_concepts", number_of_concepts, "Concepts to find (NMF rank).");
    v("patch_size", patch_size, "Side of the square patches cut from the images, in pixels.");
    v("nb_design", nb_design, "Sobol design size for the importance estimate.");
    v("max_iter", max_iter, "NMF iterations at most.");
    v("batch_size", batch_size, "Patches per forward pass.");
    v("seed", seed, "Seed of the NMF initialisation.");
  }
  void validate() const;
};

struct CraftResult {
  at::Tensor patches;      // [P, C, patch, patch], in the model's input space
  at::Tensor u, w;         // patch coefficients [P, r], concept bank [r, F]
  at::Tensor importances;  // [r] total Sobol indices, averaged over the images
  double nmf_relative_error = 0;
};
// Inputs [N, C, H, W] of one class; `target` is that class's output index.
CraftResult craft(const Model& model, const std::string& layer, const at::Tensor& inputs, int64_t target,
                  const CraftOptions& options, const ProgressCallback& progress = {}, const CancelToken& cancel = {});

}  // namespace candela
