// Noise tunnel: SmoothGrad (Smilkov et al. 2017), SmoothGrad-squared and VarGrad
// (Adebayo et al. 2018), wrapping any registered method (Captum's NoiseTunnel).
// Definition: with x_s = x + N(0, stdevs^2) for s = 1..nt_samples and a_s the wrapped
// method's attribution of x_s: smoothgrad = mean_s a_s, smoothgrad_sq = mean_s a_s^2,
// vargrad = mean_s a_s^2 - (mean_s a_s)^2.
#pragma once

#include "candela/core/method.h"

namespace candela {

struct NoiseTunnelOptions {
  std::string nt_type = "smoothgrad";
  int64_t nt_samples = 5;
  int64_t nt_samples_batch_size = 0;
  double stdevs = 1.0;
  bool draw_baseline_from_distrib = false;
  int64_t seed = 0;
  std::string base_method = "saliency";
  nlohmann::json base_options = nlohmann::json::object();
  template <class V> void visit(V& v) {
    v("nt_type", nt_type, "smoothgrad, smoothgrad_sq or vargrad.", {"smoothgrad", "smoothgrad_sq", "vargrad"});
    v("nt_samples", nt_samples, "Noisy copies of each input.");
    v("nt_samples_batch_size", nt_samples_batch_size,
      "Noisy copies of each input handed to the wrapped method at once (0: as many as fit in a quarter of "
      "--max-memory).");
    v("stdevs", stdevs, "Standard deviation of the Gaussian noise, in input units (Captum's absolute scale).");
    v("draw_baseline_from_distrib", draw_baseline_from_distrib,
      "Draw one baseline per noisy copy from a baseline distribution.");
    v("seed", seed, "Seed of the noise.");
    v("base_method", base_method, "The registered method to smooth.");
    v("base_options", base_options, "Options of the wrapped method, as a JSON object.");
  }
  void validate() const;
};

class NoiseTunnel : public Method<NoiseTunnel, NoiseTunnelOptions> {
 public:
  // uses_baseline: the wrapped method's (the registry lists false).
  static constexpr MethodTraits kTraits{
      .name = "noise_tunnel",
      .family = "gradient",
      .description = "SmoothGrad, SmoothGrad-squared or VarGrad around any other method.",
      .reference = "Smilkov et al. 2017, SmoothGrad; Adebayo et al. 2018, Local explanation methods"};
  NoiseTunnel() : NoiseTunnel(Options{}) {}
  explicit NoiseTunnel(Options options);
  nlohmann::json options() const override;
  bool uses_baseline() const override;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  std::shared_ptr<Explainer> base_;
};

}  // namespace candela
