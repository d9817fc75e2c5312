// Adversarial probes: how little input change flips a prediction.
//
// torchattacks' attacks, conventions and defaults (Kim 2020, github.com/Harry24k/adversarial-attacks-pytorch):
// every attack works in *pixel space*, the spec's range [range_min, range_max] before the
// normalisation (mean/std) that the model's input spec describes, so eps = 8/255 means 8 grey
// levels of a [0, 1] image whatever the normalisation (torchattacks' set_normalization_used).
// Inputs and outputs are in the model's input space (normalised), like every other Candela tensor.
// The loss is the cross-entropy of the logits against the label, averaged over all the rows
// attacked in one call (torchattacks' CrossEntropyLoss on one batch of them all), whatever batches
// the evaluator runs.
//
//   FGSM   (Goodfellow et al. 2015)  x' = clip(x + eps * sign(grad))
//   PGD    (Madry et al. 2018)       L-inf: x_{t+1} = clip(x + clamp(x_t + alpha * sign(grad_t) - x, -eps, eps)),
//                                    x_0 = clip(x + U(-eps, eps)) with random_start, else x
//   PGDL2                            L2: step alpha * grad / (||grad||_2 + 1e-10), then delta scaled by
//                                    min(1, eps / ||delta||_2); random start: a Gaussian direction
//                                    scaled to radius U(0, 1) * eps
//   DeepFool (Moosavi-Dezfooli et al. 2016), as torchattacks: each step, for a row still classified
//                                    as its label l, k* = argmin_k |f_k - f_l| / ||w_k - w_l||_2 (w =
//                                    the gradient of each logit) and x_{t+1} = clip(x_t + (1 + overshoot)
//                                    |f_k* - f_l| (w_k* - w_l) / ||w_k* - w_l||^2); a row stops once flipped.
//
// clip is the pixel range: for image specs always ("auto"); tabular specs are not clipped unless
// clamp = "range" (their default range [0, 1] rarely describes raw features).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "candela/core/error.h"

namespace candela {

class Model;
class Evaluator;

struct AttackOptions {
  std::string attack = "pgd";  // fgsm, pgd (L-inf), pgdl2, deepfool
  // Negative: torchattacks' default for the attack. eps: fgsm/pgd 8/255, pgdl2 1.0;
  // alpha: pgd 2/255, pgdl2 0.2; steps: pgd/pgdl2 10, deepfool 50.
  double eps = -1, alpha = -1;
  int64_t steps = -1;
  bool random_start = true;  // pgd, pgdl2 (torchattacks: True)
  double overshoot = 0.02;   // deepfool
  std::string clamp = "auto";  // auto (image specs: the range), range (always), none
  int64_t seed = 0;            // of the random start

  template <class V> void visit(V& v) {
    v("attack", attack, "Attack: fgsm, pgd (L-inf), pgdl2, deepfool (torchattacks' definitions).",
      {"fgsm", "pgd", "pgdl2", "deepfool"});
    v("eps", eps, "Perturbation budget in pixel units (negative: torchattacks' default, 8/255; pgdl2 1.0).");
    v("alpha", alpha, "PGD step size in pixel units (negative: 2/255; pgdl2 0.2).");
    v("steps", steps, "Iterations (negative: pgd 10, deepfool 50).");
    v("random_start", random_start, "PGD starts from a random point in the eps-ball (torchattacks: true).");
    v("overshoot", overshoot, "DeepFool's overshoot per step.");
    v("clamp", clamp, "Keep inputs in the spec's pixel range: auto (images only), range (always), none.",
      {"auto", "range", "none"});
    v("seed", seed, "Seed of the random start.");
  }
  void validate() const;
  // The same with torchattacks' defaults filled in for the negative fields.
  AttackOptions resolved() const;
  bool is_l2() const { return attack == "pgdl2"; }
};

// The adversarial inputs for `inputs` [N, ...] (model input space) against `labels` (int64 [N]),
// in the model's input space. `eps` (optional, [N] doubles) overrides options.eps per row, and
// `alpha` likewise (the minimal-eps search gives each row its own budget). Every model call goes
// through `evaluator` (counts, batches, cancel).
at::Tensor adversarial_attack(Evaluator& evaluator, const at::Tensor& inputs, const at::Tensor& labels,
                              const AttackOptions& options, const at::Tensor& eps = {}, const at::Tensor& alpha = {});

// Pixel space <-> the model's input space, from the spec (identity without mean/std or for
// non-image layouts), and the clip bounds in pixel space.
struct PixelSpace {
  at::Tensor mean, std;  // broadcastable against [N, ...]; undefined = identity
  bool clip = false;
  double lo = 0, hi = 1;
  static PixelSpace of(const Model& model, const std::string& clamp);
  at::Tensor to_pixels(const at::Tensor& x) const;
  at::Tensor to_model(const at::Tensor& p) const;
  at::Tensor clipped(const at::Tensor& p) const;
};

}  // namespace candela
