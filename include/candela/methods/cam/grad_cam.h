// Grad-CAM (Selvaraju et al. 2017). Channel weights are the spatial mean of the target's
// gradient: w_c = mean_ij dY/dA_cij; map = sum_c w_c A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class GradCam : public BaseCam {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options : CamOptions {
    template <class V> void visit(V& v) { visit_cam(v); }
    void validate() const { validate_cam(); }
  };
  GradCam() : GradCam(Options{}) {}
  explicit GradCam(Options options) : BaseCam(options), options_(std::move(options)) {}
  std::string name() const override { return "grad_cam"; }
  nlohmann::json options() const override;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;

 private:
  Options options_;
};

}  // namespace candela
