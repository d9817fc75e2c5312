// Eigen-CAM (Muhammad & Yeasin 2020). The activations projected on their first principal
// component; no gradients, no target (the sign is the SVD's).
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class EigenCam : public BaseCam {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options : CamOptions {
    template <class V> void visit(V& v) { visit_cam(v); }
    void validate() const { validate_cam(); }
  };
  EigenCam() : EigenCam(Options{}) {}
  explicit EigenCam(Options options) : BaseCam(options), options_(std::move(options)) {}
  std::string name() const override { return "eigen_cam"; }
  nlohmann::json options() const override;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
  bool uses_gradients() const override { return false; }

 private:
  Options options_;
};

}  // namespace candela
