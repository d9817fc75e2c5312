// Explanations that improve a model: `candela refine` retrains a classifier so that it stops
// relying on an image region an audit flagged (a watermark, a tag, a border artefact).
//
// Two methods, both fine-tuning the TorchScript module's own parameters (a deep copy; the
// caller's model is untouched) with Adam (Kingma & Ba 2015) in train mode:
//
// - rrr, "Right for the Right Reasons" (Ross, Hughes & Doshi-Velez, IJCAI 2017): the loss of a
//   batch is
//       sum_n CE(f(x_n), y_n) + l2_grads * sum_n sum_{i in A} (d/dx_i sum_k log p_k(x_n))^2
//                              + l2_params * ||theta||^2,
//   A the flagged region (all channels). The penalty is an input gradient, so the parameter
//   gradient differentiates through a gradient (double backpropagation). Names and defaults as
//   in the authors' code (github.com/dtak/rrr): summed cross-entropy, l2_grads = 1000 (their
//   image experiments: Decoy MNIST, Toy Colors), l2_params = 1e-4, batch 256, Adam lr 1e-3.
// - randomize: the flagged region of every training image is replaced, afresh in every epoch,
//   by uniform noise over the training inputs' value range (fill = uniform), or by the same
//   region of another image of the batch (fill = shuffle: the region keeps its distribution,
//   artefact included, but no longer says anything about the label), then plain cross-entropy
//   (summed, as above) with the same l2_params.
//
// TorchScript in LibTorch 1.13: training runs on a deepcopy() of the module in train mode, on
// module.parameters() set to require grad (a frozen module has none: refused), and saves with
// module.save(). The graph executor's optimisations are off while training
// (torch::jit::GraphOptimizerEnabledGuard(false)) so that every aten op records ordinary autograd
// history and double backpropagation never depends on which subgraphs the executor would turn
// into differentiable graphs; for the shortcut CNN both settings give the same parameter
// gradients (checked in Python on the same LibTorch).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "candela/core/progress.h"

namespace torch::jit {
struct Module;
}

namespace candela {

class Model;

// A rectangle of the image, rows y0..y1-1 and columns x0..x1-1 (end-exclusive, as audit.json's
// "window").
struct ImageRegion {
  int64_t y0 = 0, x0 = 0, y1 = 0, x1 = 0;
  nlohmann::json to_json() const;
  // "y0,x0,y1,x1" or an audit.json (its "window"); `what` names the flag in errors.
  static ImageRegion parse(const std::string& text, const std::string& what = "--region");
  bool overlaps(const ImageRegion& other) const;
};

struct RefineOptions {
  std::string method = "rrr";
  double l2_grads = 1000;     // rrr: weight of the input-gradient penalty (Ross et al.'s name)
  double l2_params = 1e-4;    // weight decay as a loss term (Ross et al.'s name)
  std::string fill = "shuffle";  // randomize: shuffle (another image's region) or uniform noise
  int64_t epochs = 12;
  double lr = 3e-3;
  int64_t batch_size = 256;
  int64_t seed = 0;
  template <class V> void visit(V& v) {
    v("method", method, "rrr (input-gradient penalty in the region) or randomize (the region replaced).",
      {"rrr", "randomize"});
    v("l2_grads", l2_grads, "rrr: weight of the squared input gradients inside the region (Ross et al.: 1000).");
    v("l2_params", l2_params, "Weight of the squared parameters in the loss (Ross et al.: 1e-4).");
    v("fill", fill, "randomize: uniform noise over the inputs' range, or shuffle (the region of another image).",
      {"uniform", "shuffle"});
    v("epochs", epochs, "Passes over the training data.");
    v("lr", lr, "Adam's learning rate.");
    v("batch_size", batch_size, "Training images per step.");
    v("seed", seed, "Seed of the batch order and the noise.");
  }
  void validate() const;
};

struct RefineEpoch {
  int64_t epoch = 0;            // 1-based
  double loss = 0, cross_entropy = 0, penalty = 0;  // per sample, averaged over the epoch
  double train_accuracy = 0;    // on the (modified) training batches, during the epoch
  double seconds = 0;           // since training started
  nlohmann::json to_json() const;
};

struct Refined {
  std::shared_ptr<torch::jit::Module> module;  // the retrained copy, in eval mode
  std::vector<RefineEpoch> epochs;
};

// Fine-tunes a deep copy of `model`'s module on (inputs [N, ...] image layout NCHW or NHWC as the
// model's spec says, labels int64 [N]). Throws InvalidArgument for a function model, non-image
// inputs, a region outside the image, labels out of range; Cancelled when `cancel` fires.
Refined refine_model(const Model& model, const at::Tensor& inputs, const at::Tensor& labels,
                     const ImageRegion& region, const RefineOptions& options,
                     const std::function<void(const RefineEpoch&)>& on_epoch = {}, const CancelToken& cancel = {});

// Accuracy of the model's top-1 on (inputs, labels); NaN for an empty set.
double top1_accuracy(const Model& model, const at::Tensor& inputs, const at::Tensor& labels);

// The model's bytes as TorchScript would save them (for an atomic write).
std::string module_bytes(const torch::jit::Module& module);

}  // namespace candela
