// XGrad-CAM (Fu et al. 2020). w_c = sum_ij g_cij A_cij / (sum_ij A_cij + 1e-7);
// map = sum_c w_c A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class XGradCam : public BaseCam {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options : CamOptions {
    template <class V> void visit(V& v) { visit_cam(v); }
    void validate() const { validate_cam(); }
  };
  XGradCam() : XGradCam(Options{}) {}
  explicit XGradCam(Options options) : BaseCam(options), options_(std::move(options)) {}
  std::string name() const override { return "xgrad_cam"; }
  nlohmann::json options() const override;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;

 private:
  Options options_;
};

}  // namespace candela
