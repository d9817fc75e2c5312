#include "candela/core/registry.h"
#include "candela/methods/cam/ablation_cam.h"
#include "candela/methods/cam/eigen_cam.h"
#include "candela/methods/cam/eigen_grad_cam.h"
#include "candela/methods/cam/full_grad.h"
#include "candela/methods/cam/grad_cam.h"
#include "candela/methods/cam/grad_cam_elementwise.h"
#include "candela/methods/cam/grad_cam_plus_plus.h"
#include "candela/methods/cam/hires_cam.h"
#include "candela/methods/cam/layer_cam.h"
#include "candela/methods/cam/score_cam.h"
#include "candela/methods/cam/xgrad_cam.h"

namespace candela {

void register_cam_methods(Registry& r) {
  r.add<GradCam>();
  r.add<HiResCam>();
  r.add<GradCamElementWise>();
  r.add<GradCamPlusPlus>();
  r.add<XGradCam>();
  r.add<LayerCam>();
  r.add<EigenCam>();
  r.add<EigenGradCam>();
  r.add<ScoreCam>();
  r.add<AblationCam>();
  r.add<FullGrad>();
}

}  // namespace candela
