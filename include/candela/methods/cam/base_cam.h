// Class activation maps: one base class does the work (pytorch-grad-cam's BaseCAM design);
// each method only says how a layer's activations and gradients become a map.
//
// For each target layer: raw map [N, h, w] -> ReLU -> min-max normalisation per image ->
// bilinear upsampling to the input's height and width; then the layers' maps are averaged
// and normalised again (pytorch-grad-cam's defaults). With relu, normalize and upsample all
// false, a single layer's raw map is returned (grad_cam then equals Captum's LayerGradCam).
#pragma once

#include <string>
#include <vector>

#include "candela/core/explainer.h"
#include "candela/core/method.h"
#include "candela/core/options.h"

namespace candela {

class LayerTaps;

struct CamOptions {
  std::vector<std::string> layers;  // empty: the spatial map [N, C, h, w] (h * w > 1) computed last
  bool relu = true;
  bool normalize = true;
  bool upsample = true;
  std::vector<int64_t> reshape_grid;  // [h, w]: token outputs [N, T, C] become [N, C, h, w]; a first
                                      // (CLS) token is dropped when T = h * w + 1 (ViT)
  template <class V>
  void visit_cam(V& v) {
    v("layers", layers, "Target layers (--layer, repeatable); default: the spatial map [N, C, h, w] (h * w > 1) the forward computes last, e.g. layer4.1 of a ResNet-18.");
    v("relu", relu, "Keep only positive evidence (pytorch-grad-cam applies it; Captum's LayerGradCam does not).");
    v("normalize", normalize, "Scale each map to [0, 1] (pytorch-grad-cam's scale_cam_image).");
    v("upsample", upsample, "Resize maps to the input's height and width (bilinear).");
    v("reshape_grid", reshape_grid, "For token layers [N, T, C]: the grid h,w to fold tokens into (drops a CLS token).");
  }
  void validate_cam() const;
  template <class V> void visit(V& v) { visit_cam(v); }
  void validate() const { validate_cam(); }
};

class BaseCam : public Explainer {
 public:
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 protected:
  explicit BaseCam(CamOptions options);

  // Everything a method may need about one layer. activations/gradients: [N, C, h, w].
  struct LayerData {
    std::string name;
    at::Tensor activations, gradients;
    Evaluator* evaluator = nullptr;
    const ExplainRequest* request = nullptr;
    const Target* target = nullptr;  // resolved: fixed classes or a function
    at::Tensor scores;               // the target's score per sample at the inputs
    nlohmann::json* extra = nullptr;  // the result's method-specific metadata
  };
  // The raw map [N, h, w] of one layer.
  virtual at::Tensor layer_map(const LayerData& layer) const = 0;
  virtual bool uses_gradients() const { return true; }
  // Per-channel weights [N, C] -> sum_c w_c A_c, for the methods defined by weights.
  static at::Tensor weighted_sum(const at::Tensor& weights, const at::Tensor& activations);

  CamOptions cam_;
};

// Options of the CAMs that have no others: GradCam({.layers = {"layer4"}, .relu = false}).
using PlainCamOptions = CamOptions;

// What every CAM method shares, as Method<> does for the others: its facts from kTraits, its
// options struct kept, validated and reported as JSON.
template <class Derived, class Opts>
class CamWith : public BaseCam {
 public:
  using Options = Opts;
  CamWith() : CamWith(Options{}) {}
  explicit CamWith(Options options) : BaseCam(options), options_(std::move(options)) { options_.validate(); }
  std::string name() const override { return Derived::kTraits.name; }
  nlohmann::json options() const override { return options_to_json(options_); }
  const Options& settings() const { return options_; }

 protected:
  Options options_;
};

// pytorch-grad-cam's get_2d_projection: each sample's activations [C, h, w] projected on
// their first principal component (centred over positions). The sign is the SVD's.
at::Tensor first_principal_projection(const at::Tensor& activations);

}  // namespace candela
