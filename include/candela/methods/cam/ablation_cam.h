// Ablation-CAM (Desai & Ramaswamy 2020), as pytorch-grad-cam computes it: w_c = (y - y_c) / y,
// where y_c is the target's score with channel c of the layer ablated (set to 0, or to the
// sample's minimum activation - 1e7 when that minimum is not 0); map = sum_c w_c A_c.
// The ablated activations only change what comes after the layer, so Candela computes the
// network before the layer once and re-runs only the rest (suffix execution) for all C
// ablations; where the graph cannot be cut it falls back to full passes and says so.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

struct AblationCamOptions : CamOptions {
  bool suffix_execution = true;
  template <class V> void visit(V& v) {
    visit_cam(v);
    v("suffix_execution", suffix_execution,
      "Re-run only the network after the layer (false: full forward passes, as pytorch-grad-cam does).");
  }
  void validate() const { validate_cam(); }
};

class AblationCam : public CamWith<AblationCam, AblationCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "ablation_cam",
      .family = "cam",
      .description = "Channels weighted by the score drop when each is ablated (suffix execution).",
      .reference = "Desai & Ramaswamy 2020, Ablation-CAM"};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
  bool uses_gradients() const override { return false; }
};

}  // namespace candela
