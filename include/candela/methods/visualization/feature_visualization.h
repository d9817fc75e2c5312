// Feature visualisation by activation maximisation (Olah, Mordvintsev & Schubert, "Feature
// Visualization", Distill 2017; Lucid/Lucent's optvis): the image x* = argmax_x O(f(T(p(θ))))
// found by Adam on the parameters θ of an image parametrisation p, through random
// transformations T that make the result robust, for an objective O over the model's layers.
//
// "pixel" and "fourier" follow Lucent (greentfrapp/lucent, lucent/optvis) so results compare:
//   - parametrisations: "pixel" (θ ~ N(0, sd²) per pixel) and "fourier" (θ ~ N(0, sd²) real and
//     imaginary parts of the rfft2 spectrum, scaled by 1 / max(f, 1/max(h, w))^decay_power,
//     inverted with irfftn(norm="ortho") and divided by 4); both then optionally decorrelated
//     with Lucent's 3x3 colour matrix (color_correlation_svd_sqrt / max column norm) and mapped
//     to [0, 1] by a sigmoid. Defaults: fourier, sd 0.01, decay_power 1, decorrelate true.
//   - transforms ("standard", Lucent's standard_transforms): pad 12 (constant 0.5), jitter 8,
//     random_scale 1 + (i - 5)/50 for i = 0..10, random_rotate over -10..10 degrees plus five
//     extra 0s, jitter 4; one draw per step for the whole batch, from `seed`.
//   - Adam (PyTorch's defaults: betas 0.9, 0.999, eps 1e-8) with lr 0.05, 512 steps, 128x128.
//   - render_vis's upsampling ("auto"): Lucent resizes the transformed batch to 224x224
//     (bilinear, align_corners) whenever the image is smaller than 224; Candela does the same
//     when the model declares no input size or one of at least 224, and resizes to the model's
//     declared size when that is smaller than 224 (such a model was trained at that size and
//     often cannot take 224: a Linear after the convolutions). "lucent": Lucent's rule always;
//     "model": only to the model's declared size when larger; "none".
//
// "maco" is MACO (Fel, Boissin, Boutin, et al., "Unlocking Feature Visualization for Deeper
// Networks with MAgnitude Constrained Optimization", NeurIPS 2023), after Xplique's
// features_visualizations/maco.py: θ is the Fourier PHASE φ [C, h, w/2+1] ~ N(0, 1); the
// magnitude r is fixed; the image is
//     x = sigmoid(recorrelate(standardise(irfft2(r · e^{i·standardise(φ)}))))
// (standardise: minus the mean, divided by the population std + 1e-5, over the whole tensor;
// recorrelate: the colour matrix above, 3-channel images) mapped to the model's value range.
// Each step takes `maco_crops` random square crops of x (centres 0.5 + N(0, 0.15²), sides
// clip(N(box, 0.05²), 0.05, 1) with box linear from 0.5 to 0.05 over the steps, or fixed by
// maco_box), resized bilinearly to the model's input size (tf.image.crop_and_resize: zeros
// outside), adds N(0, noise²) + U(-noise/2, noise/2) noise (maco_noise, in the model's value
// range), and maximises the objective's mean over the crops with Keras' Nadam (lr 1,
// beta_1 0.9, beta_2 0.999, epsilon 1e-7). Defaults are Xplique's: 256 steps, 512x512, 32
// crops, noise 0.08. The transparency (alpha) map is Xplique's: the sum over the steps of
// |d objective / d x|. Xplique's magnitude is the mean |rfft2| of ImageNet images, which it
// downloads; Candela's default is the 1/f^decay_power spectrum of the Fourier parametrisation
// (the power law natural images follow, amplitude ~ 1/f), and maco_magnitude() below (the CLI's
// --maco-spectrum) computes Xplique's mean spectrum from any set of images.
// Objectives are maximised (Lucent minimises their negative): see Objective below.
#pragma once

#include <ATen/core/Generator.h>
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

// steps, lr, size and sd at 0 take the parametrisation's default (resolved()): Lucent's for
// pixel and fourier, Xplique's for maco.
struct FeatureVisualizationOptions {
  std::string param = "fourier";        // pixel, fourier, maco
  bool decorrelate = true;              // Lucent's colour decorrelation (3-channel images only)
  double sd = 0;                        // std of the initial parameters; 0: 0.01 (Lucent), maco 1 (Xplique)
  double decay_power = 1.0;             // fourier: spectrum scaled by 1/f^decay_power; maco: the default magnitude
  int64_t steps = 0;                    // 0: 512 (Lucent's thresholds=(512,)), maco 256 (Xplique's nb_steps)
  double lr = 0;                        // 0: Adam 0.05 (Lucent), maco Nadam 1.0 (Xplique)
  int64_t size = 0;                     // image height and width; 0: 128 (Lucent), maco 512 (Xplique's custom_shape)
  int64_t batch = 1;                    // images optimised together (maco: 1)
  std::string transforms = "standard";  // standard (Lucent's standard_transforms), none; maco has its crops
  std::string upsample = "auto";        // auto, lucent, model, none (see the top of this file)
  int64_t seed = 0;                     // initial parameters and transform draws
  int64_t maco_crops = 32;              // maco: crops per step (Xplique's nb_crops; 0: the whole image)
  double maco_noise = 0.08;             // maco: noise_intensity
  double maco_box = 0;                  // maco: crop side as a fraction of the image; 0: 0.5 -> 0.05 over the steps
  // maco: the fixed magnitude [C or 1, h', w'] (resized to [size, size/2+1]); undefined: the
  // 1/f^decay_power spectrum. Not an option of the CLI's form: set by the caller (see maco_magnitude).
  at::Tensor magnitude;
  template <class V> void visit(V& v) {
    v("param", param,
      "Image parametrisation: fourier (1/f spectrum, Lucent's fft_image), pixel, or maco (phase only, fixed "
      "magnitude: Fel et al. 2023, Xplique's maco).",
      {"fourier", "pixel", "maco"});
    v("decorrelate", decorrelate, "Decorrelate colours with Lucent's 3x3 matrix (3-channel images).");
    v("sd", sd, "Standard deviation of the initial parameters (0: 0.01; maco: 1).");
    v("decay_power", decay_power, "Fourier: the spectrum is scaled by 1/f^decay_power (maco: the default magnitude).");
    v("steps", steps, "Optimiser steps (0: 512; maco: 256).");
    v("lr", lr, "Learning rate (0: Adam 0.05; maco: Nadam 1.0).");
    v("size", size, "Image height and width in pixels (0: 128; maco: 512).");
    v("batch", batch, "Images optimised together (diversity compares them; maco: 1).");
    v("transforms", transforms, "Robustness transforms: standard (Lucent's) or none (maco uses its crops).",
      {"standard", "none"});
    v("upsample", upsample,
      "Resize the transformed batch: auto (to 224 below 224 as Lucent's render_vis, or to the model's smaller "
      "declared size), lucent (always Lucent's rule), model (to the model's size when larger), none.",
      {"auto", "lucent", "model", "none"});
    v("seed", seed, "Seed of the initial parameters and of the transform draws.");
    v("maco_crops", maco_crops, "maco: random crops per step (0: the whole image).");
    v("maco_noise", maco_noise, "maco: noise intensity added to the crops (in the model's value range).");
    v("maco_box", maco_box, "maco: crop side as a fraction of the image (0: from 0.5 to 0.05 over the steps).");
  }
  void validate() const;
  // The options with steps, lr, size and sd filled in where 0.
  FeatureVisualizationOptions resolved() const;
};

struct FeatureVisualization {
  at::Tensor images;                          // [batch, C, size, size] in [0, 1]
  at::Tensor alpha;                           // maco: the transparency, sum over steps of |d objective/d image|
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
// The same for several channels of one layer, with one pass over the data (an atlas).
std::vector<std::vector<DatasetExample>> dataset_examples(const Model& model, const std::string& layer,
                                                          const std::vector<int64_t>& channels,
                                                          const at::Tensor& inputs, int64_t k,
                                                          int64_t batch_size = 32);

// Xplique's maco_dataset buffer: the mean over the images [N, C, H, W] of |rfft2(image)|,
// resized bilinearly (tf.image.resize: half-pixel centres) to [C, size, size/2+1].
at::Tensor maco_magnitude(const at::Tensor& images, int64_t size);
// plot_maco's alpha for display: the channels' mean of `alpha` [C, H, W], clipped at its 80th
// percentile and divided by its maximum, [H, W] in [0, 1].
at::Tensor maco_alpha_display(const at::Tensor& alpha, double percentile = 80);

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

// MACO. irfft2(magnitude · e^{i·phase}) with output size [h, w] (backward norm: numpy's and
// tf.signal's irfft2d): [..., h, w/2+1] magnitude and phase -> [..., h, w]. Phase-only: an image's
// own magnitude with its own phase gives it back.
at::Tensor phase_to_image(const at::Tensor& magnitude, const at::Tensor& phase, int64_t h, int64_t w);
// Xplique's maco_image_parametrization for phase [N, C, h, w/2+1]: standardise the phase,
// phase_to_image, standardise the image, recorrelate colours (3 channels, when `decorrelate`),
// sigmoid: [N, C, h, w] in (0, 1).
at::Tensor maco_image(const at::Tensor& magnitude, const at::Tensor& phase, int64_t h, int64_t w, bool decorrelate);
// The default magnitude: 1 / max(f, 1/max(h, w))^decay_power on the rfft2 grid, [h, w/2+1].
at::Tensor maco_default_magnitude(int64_t h, int64_t w, double decay_power);
// tf.image.crop_and_resize of one image [1, C, H, W]: boxes [n, 4] (y1, x1, y2, x2) in [0, 1]
// image coordinates, each sampled bilinearly on an out_h x out_w grid from corner to corner; a
// sample outside the image is 0. -> [n, C, out_h, out_w].
at::Tensor crop_and_resize(const at::Tensor& image, const at::Tensor& boxes, int64_t out_h, int64_t out_w);
// One step's crops as Xplique's maco_optimisation_step draws them: [n, 4] boxes.
at::Tensor draw_maco_boxes(int64_t n, double box_size, at::Generator& gen);

}  // namespace fv
}  // namespace candela
