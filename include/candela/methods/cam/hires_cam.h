// HiResCAM (Draelos & Carin 2020). Element-wise gradient times activation, summed over
// channels: map = sum_c dY/dA_c * A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class HiResCam : public BaseCam {
 public:
  static constexpr bool kUsesBaseline = false;
  struct Options : CamOptions {
    template <class V> void visit(V& v) { visit_cam(v); }
    void validate() const { validate_cam(); }
  };
  HiResCam() : HiResCam(Options{}) {}
  explicit HiResCam(Options options) : BaseCam(options), options_(std::move(options)) {}
  std::string name() const override { return "hires_cam"; }
  nlohmann::json options() const override;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;

 private:
  Options options_;
};

}  // namespace candela
