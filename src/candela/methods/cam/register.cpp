#include "candela/core/registry.h"
#include "candela/methods/cam/ablation_cam.h"
#include "candela/methods/cam/eigen_cam.h"
#include "candela/methods/cam/eigen_grad_cam.h"
#include "candela/methods/cam/full_grad.h"
#include "candela/methods/cam/grad_cam.h"
#include "candela/methods/cam/grad_cam_plus_plus.h"
#include "candela/methods/cam/hires_cam.h"
#include "candela/methods/cam/layer_cam.h"
#include "candela/methods/cam/score_cam.h"
#include "candela/methods/cam/xgrad_cam.h"

namespace candela {

void register_cam_methods(Registry& r) {
  r.add(method_info<GradCam>("grad_cam", "cam", "Layer activations weighted by the spatial mean of their gradients.",
                             "Selvaraju et al. 2017, Grad-CAM"));
  r.add(method_info<HiResCam>("hires_cam", "cam", "Element-wise gradient times activation, summed over channels.",
                              "Draelos & Carin 2020, Use HiResCAM instead of Grad-CAM"));
  r.add(method_info<GradCamPlusPlus>("grad_cam_plus_plus", "cam",
                                     "Grad-CAM with higher-order weights for several instances of a class.",
                                     "Chattopadhyay et al. 2018, Grad-CAM++"));
  r.add(method_info<XGradCam>("xgrad_cam", "cam", "Channel weights from activation-normalised gradients.",
                              "Fu et al. 2020, Axiom-based Grad-CAM"));
  r.add(method_info<LayerCam>("layer_cam", "cam", "Positive gradients times activations, position by position.",
                              "Jiang et al. 2021, LayerCAM"));
  auto eigen = method_info<EigenCam>("eigen_cam", "cam", "First principal component of the layer's activations (no target).",
                                     "Muhammad & Yeasin 2020, Eigen-CAM");
  eigen.uses_target = false;
  r.add(eigen);
  r.add(method_info<EigenGradCam>("eigen_grad_cam", "cam", "First principal component of gradient x activation.",
                                  "pytorch-grad-cam (Gildenblat et al.), EigenGradCAM"));
  r.add(method_info<ScoreCam>("score_cam", "cam",
                              "Channels weighted by the target's score on the input masked by each channel.",
                              "Wang et al. 2020, Score-CAM"));
  r.add(method_info<AblationCam>("ablation_cam", "cam",
                                 "Channels weighted by the score drop when each is ablated (suffix execution).",
                                 "Desai & Ramaswamy 2020, Ablation-CAM"));
  r.add<FullGrad>();
}

}  // namespace candela
