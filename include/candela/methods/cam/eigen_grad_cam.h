// Eigen-Grad-CAM (pytorch-grad-cam). The first principal component of gradient times
// activation.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class EigenGradCam : public BaseCam {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options : CamOptions {
    template <class V> void visit(V& v) { visit_cam(v); }
    void validate() const { validate_cam(); }
  };
  EigenGradCam() : EigenGradCam(Options{}) {}
  explicit EigenGradCam(Options options) : BaseCam(options), options_(std::move(options)) {}
  std::string name() const override { return "eigen_grad_cam"; }
  nlohmann::json options() const override;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;

 private:
  Options options_;
};

}  // namespace candela
