// Feature visualisation by activation maximisation (Olah, Mordvintsev & Schubert, "Feature
// Visualization", Distill 2017; Lucid/Lucent's optvis): the image x* = argmax_x O(f(T(p(θ))))
// found by Adam on the parameters θ of an image parametrisation p, through random
// transformations T that make the result robust, for an objective O over the model's layers.
//
// Everything follows Lucent (greentfrapp/lucent, lucent/optvis) so results compare:
//   - parametrisations: "pixel" (θ ~ N(0, sd²) per pixel) and "fourier" (θ ~ N(0, sd²) real and
//     imaginary parts of the rfft2 spectrum, scaled by 1 / max(f, 1/max(h, w))^decay_power,
//     inverted with irfftn(norm="ortho") and divided by 4); both then optionally decorrelated
//     with Lucent's 3x3 colour matrix (color_correlation_svd_sqrt / max column norm) and mapped
//     to [0, 1] by a sigmoid. Defaults: fourier, sd 0.01, decay_power 1, decorrelate true.
//   - transforms ("standard", Lucent's standard_transforms): pad 12 (constant 0.5), jitter 8,
//     random_scale 1 + (i - 5)/50 for i = 0..10, random_rotate over -10..10 degrees plus five
//     extra 0s, jitter 4; one draw per step for the whole batch, from `seed`.
//   - Adam (PyTorch's defaults: betas 0.9, 0.999, eps 1e-8) with lr 0.05, 512 steps, 128x128.
//   - render_vis's upsampling: when the model's input spec has an image size larger than the
//     transformed image, the batch is resized to it (bilinear, align_corners) as Lucent does for
//     torchvision models below 224x224.
// Objectives are maximised (Lucent minimises their negative): see Objective below.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "candela/core/options.h"
#include "candela/core/progress.h"

namespace candela {

class Model;

// One term of an objective: a quantity of a layer's activation, computed per image.
//   neuron(LAYER, C[, X, Y])  the activation of channel C at spatial position (X, Y) (default the
//                             centre, as Lucent: X = H//2, Y = W//2; X indexes height)
//   channel(LAYER, C)         channel C's mean activation (for [N, C] layers, unit C)
//   deepdream(LAYER)          the mean of the layer's squared activation (Lucent's `deepdream`)
//   class(C)                  the model's output C (a class logit)
//   diversity(LAYER)          minus the mean cosine similarity between the images' Gram matrices
//                             of LAYER (Lucent's `diversity` with its sign turned for maximising:
//                             Lucent's `obj - w * diversity` is Candela's `obj + w * diversity`)
// A term with `[B]` after it applies to image B of the batch only; without it, to every image.
struct ObjectiveTerm {
  std::string kind;        // neuron, channel, deepdream, class, diversity
  std::string layer;       // dotted module path ("" for class: the output)
  int64_t channel = -1;    // neuron, channel, class
  int64_t x = -1, y = -1;  // neuron position; -1: the centre
  int64_t batch = -1;      // -1: every image; else that image only
  double weight = 1.0;
};

// A weighted sum of terms, maximised: "channel(layer4,12) - 0.5*channel(layer4,3) + 100*diversity(layer3)".
struct Objective {
  std::vector<ObjectiveTerm> terms;
  // Parses the text form above; throws InvalidArgument naming the bad part and the known kinds.
  static Objective parse(const std::string& text);
  std::string to_string() const;
  std::vector<std::string> layers() const;  // the layers the terms read, each once
};

// The objective kinds, as the registry lists them: [{"name", "arguments", "description"}].
nlohmann::json objective_catalog();

struct FeatureVisualizationOptions {
  std::string param = "fourier";        // pixel, fourier
  bool decorrelate = true;              // Lucent's colour decorrelation (3-channel images only)
  double sd = 0.01;                     // std of the initial parameters
  double decay_power = 1.0;             // fourier: spectrum scaled by 1/f^decay_power
  int64_t steps = 512;                  // Adam steps (Lucent's thresholds=(512,))
  double lr = 0.05;                     // Adam learning rate
  int64_t size = 128;                   // image height and width
  int64_t batch = 1;                    // images optimised together
  std::string transforms = "standard";  // standard (Lucent's standard_transforms), none
  bool upsample = true;                 // resize to the spec's larger input size (Lucent's render_vis)
  int64_t seed = 0;                     // initial parameters and transform draws
  template <class V> void visit(V& v) {
    v("param", param, "Image parametrisation: fourier (1/f spectrum, Lucent's fft_image) or pixel.",
      {"fourier", "pixel"});
    v("decorrelate", decorrelate, "Decorrelate colours with Lucent's 3x3 matrix (3-channel images).");
    v("sd", sd, "Standard deviation of the initial parameters.");
    v("decay_power", decay_power, "Fourier: the spectrum is scaled by 1/f^decay_power.");
    v("steps", steps, "Adam steps.");
    v("lr", lr, "Adam learning rate.");
    v("size", size, "Image height and width in pixels.");
    v("batch", batch, "Images optimised together (diversity compares them).");
    v("transforms", transforms, "Robustness transforms: standard (Lucent's) or none.", {"standard", "none"});
    v("upsample", upsample, "Resize to the model's input size when it is larger (Lucent's render_vis).");
    v("seed", seed, "Seed of the initial parameters and of the transform draws.");
  }
  void validate() const;
};

struct FeatureVisualization {
  at::Tensor images;                          // [batch, C, size, size] in [0, 1]
  std::vector<double> objective;              // the objective's value at each step (maximised)
  std::vector<std::vector<double>> terms;     // each term's value at each step
  double wall_seconds = 0.0;
  int64_t model_evaluations = 0;              // forward+backward passes of the batch
};

// Optimises the images. Progress is reported per step; `cancel` stops at the next step.
FeatureVisualization visualize(const Model& model, const Objective& objective,
                               const FeatureVisualizationOptions& options, const ProgressCallback& progress = {},
                               const CancelToken& cancel = {});

// Each term's value (a scalar: the mean over the images it applies to, as Lucent's objectives)
// from the activations at objective.layers() (in that order) and the model's output. visualize()
// maximises the weighted sum; exposed for tests and dataset examples.
std::vector<at::Tensor> objective_terms(const Objective& objective, const std::vector<at::Tensor>& activations,
                                        const at::Tensor& output);

// Dataset examples (Olah et al. 2017's companions to a visualisation): the k samples of a data set
// on which channel `channel` of `layer` has the largest mean activation, each with the position of
// its strongest activation and that unit's receptive field in the input, found as the bounding box
// of the nonzero input gradient of the activation at that position (the effective receptive
// field: exact for convolutions, smaller where ReLUs are off).
struct DatasetExample {
  int64_t index = 0;       // row of the data
  double activation = 0;   // the channel's mean activation (what is ranked)
  double peak = 0;         // its largest activation
  int64_t y = 0, x = 0;    // where the peak is, in the layer's map
  int64_t top = 0, left = 0, bottom = 0, right = 0;  // receptive field in input pixels, [top, bottom) x [left, right)
};
std::vector<DatasetExample> dataset_examples(const Model& model, const std::string& layer, int64_t channel,
                                             const at::Tensor& inputs, int64_t k, int64_t batch_size = 32);

namespace fv {

// Lucent's color_correlation_svd_sqrt divided by its largest column norm: the matrix M with
// decorrelated = image_hwc @ M^T.
at::Tensor color_correlation_normalized();
// [N, 3, H, W] -> [N, 3, H, W], colours mixed by color_correlation_normalized().
at::Tensor decorrelate_colors(const at::Tensor& image);
// numpy's sqrt(fftfreq(h)[:, None]^2 + fftfreq(w)[:w//2+1 (+1 if w is odd)]^2): [h, w']
at::Tensor rfft2d_freqs(int64_t h, int64_t w);
// The spectrum's scale 1 / max(f, 1/max(h, w))^decay_power, [h, w'].
at::Tensor fourier_scale(int64_t h, int64_t w, double decay_power);
// Lucent's fft_image: spectrum [N, C, h, w', 2] (real, imaginary) -> image [N, C, h, w].
at::Tensor fourier_image(const at::Tensor& spectrum, const at::Tensor& scale, int64_t h, int64_t w);

// One draw of Lucent's standard_transforms.
struct TransformDraw {
  int64_t jitter1_dx = 0, jitter1_dy = 0;  // in [0, 8)
  double scale = 1.0;                      // 1 + (i - 5)/50
  double angle = 0.0;                      // degrees, counter-clockwise on screen
  int64_t jitter2_dx = 0, jitter2_dy = 0;  // in [0, 4)
};
TransformDraw draw_transforms(std::mt19937_64& rng);
// F.pad(image, [w]*4, value)
at::Tensor pad(const at::Tensor& image, int64_t w, double value);
// kornia's translate by whole pixels: out(x, y) = in(x - dx, y - dy), zeros outside.
at::Tensor translate(const at::Tensor& image, int64_t dx, int64_t dy);
// Lucent's random_scale for one scale: bilinear (align_corners) to ceil(scale * side), then
// zero padding back up when smaller (F.pad with [pad_y, pad_x] * 2, as Lucent writes it).
at::Tensor scale(const at::Tensor& image, double scale);
// kornia's warp_affine with get_rotation_matrix2d about the centre ((w-1)/2, (h-1)/2): bilinear,
// zeros outside, align_corners.
at::Tensor rotate(const at::Tensor& image, double degrees);
// pad(12, 0.5) -> jitter(8) -> scale -> rotate -> jitter(4)
at::Tensor standard_transforms(const at::Tensor& image, const TransformDraw& draw);

}  // namespace fv
}  // namespace candela
