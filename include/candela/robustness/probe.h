// The robustness probe behind `candela robustness`: one attack on a data set, and what a user
// deciding whether to trust a prediction wants to know about it.
//
// - Robust accuracy by eps (a curve): a row counts as robust at eps when its label is predicted on
//   the clean input and no attack at any budget eps' <= eps on the curve flipped it. An adversarial
//   example found within eps' is also one within eps, so the curve never rises, and at eps = 0 it
//   is the clean accuracy. Each budget runs the configured attack with alpha scaled like eps
//   (alpha * eps' / eps): a fixed alpha could not reach the edge of a larger ball in `steps`
//   steps, and at eps' = eps it is the attack asked for. (DeepFool has no budget: its curve counts the rows whose DeepFool
//   perturbation is larger than eps, in L2 or L-inf as the norm option says.)
// - Minimal flipping eps per row: a binary search on PGD's eps over [0, search_max] with
//   search_steps halvings, each PGD run with alpha = 2.5 eps / steps (Madry et al. 2018) from no
//   random start. 0 for a row misclassified already; null when even search_max does not flip it.
// - Explanation fragility (Ghorbani, Abid & Zou 2019): the rows are perturbed by a random sign
//   pattern of size fragility_eps (their random-sign baseline; pixel units), and an attribution
//   method explains both. Rows whose class the perturbation flips are left out (the question is
//   how an explanation moves when the decision does not). Reported per row: the share of the top-k
//   features kept (Ghorbani's top-k intersection) and Spearman's rank correlation of |attribution|.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "candela/core/batching.h"
#include "candela/robustness/attacks.h"

namespace candela {

class Model;

struct RobustnessOptions {
  AttackOptions attack;
  // The curve's budgets, pixel units; empty: 0, eps/4, eps/2, eps, 2 eps.
  std::vector<double> eps_curve;
  std::string norm = "linf";     // deepfool's curve and size: linf or l2 (pgdl2: always l2)
  int64_t search_steps = 10;     // halvings of the minimal-eps search; 0: no search
  double search_max = -1;        // negative: the pixel range (L-inf) or range * sqrt(features) (L2)
  std::string fragility_method = "saliency";  // "" : no fragility
  double fragility_eps = -1;     // negative: eps / 4 (L-inf units)
  double top_k = 0.1;            // share of features in the top-k intersection
  int64_t max_maps = 8;          // image rows whose perturbation and attribution maps are rendered

  template <class V> void visit(V& v) {
    attack.visit(v);
    v("eps_curve", eps_curve, "Budgets of the robust-accuracy curve (pixel units); empty: 0, eps/4, eps/2, eps, 2 eps.");
    v("norm", norm, "Norm of DeepFool's perturbation size and curve: linf or l2.", {"linf", "l2"});
    v("search_steps", search_steps, "Binary-search steps for each row's minimal flipping eps (0: no search).");
    v("search_max", search_max, "Upper end of the minimal-eps search (negative: the whole pixel range).");
    v("fragility_method", fragility_method, "Attribution method for explanation fragility (empty: skip).");
    v("fragility_eps", fragility_eps, "Size of the random-sign perturbation for fragility (negative: eps / 4).");
    v("top_k", top_k, "Share of features in fragility's top-k intersection.");
    v("max_maps", max_maps, "Image rows whose perturbation and attribution heatmaps are written.");
  }
  void validate() const;
};

struct RobustnessResult {
  at::Tensor adversarial;    // [N, ...] model input space
  at::Tensor clean_pred, adversarial_pred, labels;  // int64 [N]
  at::Tensor perturbation;   // adversarial - inputs in pixel units [N, ...]
  at::Tensor attribution;    // fragility's attribution of the clean rows [N, ...] (undefined if skipped)
  at::Tensor attribution_perturbed;
  nlohmann::json report;     // what robustness.json holds
};

// `labels` undefined: the model's top-1 on the clean inputs.
RobustnessResult probe_robustness(const Model& model, const at::Tensor& inputs, const at::Tensor& labels,
                                  const RobustnessOptions& options, const EvalOptions& eval = {});

namespace detail {
// Spearman's rank correlation of each row of a and b [N, F] (ordinal ranks: ties broken by position).
at::Tensor spearman_rows(const at::Tensor& a, const at::Tensor& b);
// |top-k(a) ∩ top-k(b)| / k per row, by |value|.
at::Tensor top_k_intersection(const at::Tensor& a, const at::Tensor& b, int64_t k);
}  // namespace detail

}  // namespace candela
