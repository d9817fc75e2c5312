// Model: one form for every model Candela explains — a TorchScript module (loaded from a
// file) or a plain batched function — plus what we know about its input and output.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace torch::jit {
struct Module;
}

namespace candela {

// The per-sample input the model expects. Read from `model.json` next to `model.pt`, or
// from command-line flags. Everything is optional except where a feature needs it (image
// loading needs shape and layout).
struct InputSpec {
  std::vector<int64_t> shape;          // per sample, without the batch dimension; empty = unknown
  std::string layout;                  // "NCHW", "NHWC", "NC" (tabular), "NL" (tokens); "" = unknown
  std::vector<double> mean;            // per channel, applied after scaling to `range`
  std::vector<double> std;             // per channel
  double range_min = 0.0, range_max = 1.0;  // image pixels are mapped to this range

  bool is_image() const;   // NCHW/NHWC with a 3-d per-sample shape
  int64_t channels() const, height() const, width() const;  // image layouts only
  nlohmann::json to_json() const;
  static InputSpec from_json(const nlohmann::json& j, const std::string& source);
  void validate() const;
};

// One tappable layer, for `candela info` and (later) --layer.
struct LayerInfo {
  std::string name;                 // dotted module path, e.g. "layer2.0.downsample"
  std::string type;                 // module class name, e.g. "Conv2d"
  std::vector<int64_t> output_shape;  // for one sample (batch dimension 1 included); empty if not a tensor
  int calls = 1;                      // times forward() runs the module (a shared module runs more than once)
  int64_t position = -1;              // order in which the forward computes the output (later is larger); -1: unknown
};

// A parameter of a module's forward() after the input (an attention mask, token type ids).
struct ForwardParameter {
  std::string name;      // as forward() names it, e.g. "attention_mask"
  std::string type;      // TorchScript type, e.g. "Optional[Tensor]"
  bool has_default = false;  // forward() can be called without it
};

class Model {
 public:
  using Function = std::function<at::Tensor(const at::Tensor&)>;

  // Loads a TorchScript file (scripted or traced) and its sidecar `<stem>.json` if present.
  // The module is put in eval mode.
  static Model load(const std::string& path);
  // Wraps a module the caller already has (it is shared, not copied).
  static Model from_module(const torch::jit::Module& module, InputSpec spec = {});
  // Wraps a batched function: [N, ...] -> [N, C]. Gradient methods need it differentiable.
  static Model from_function(Function fn, InputSpec spec = {}, std::string name = "function");

  // Batched forward pass; differentiable. Errors from the model become candela errors
  // that name the input shape.
  at::Tensor forward(const at::Tensor& batch) const;

  // The same function as forward() without autograd, through a graph built for inference: a
  // frozen copy (weights as constants, BatchNorm folded into convolutions and linear layers,
  // oneDNN where LibTorch judges it faster: torch.jit.freeze + optimize_for_inference), built once
  // per model, device and weights and checked against forward() on its first batch (float32
  // rounding apart). Falls back to forward() for function models, a module in training mode, a
  // module that cannot be frozen, and an input the optimised graph refuses.
  at::Tensor forward_inference(const at::Tensor& batch) const;

  // forward_inference() for rows [K, C, H, W] that each equal a reference sample
  // (references[reference[k]]; -1: none) outside a box, as occlusion, feature ablation and
  // KernelSHAP's small coalitions make them: the inference graph cut after its early, local
  // layers, those re-run only on the crop of each row that its box's changes reach, the rest on
  // the reference's activation with the crop pasted in (detail::LocalForward). The same outputs,
  // float32 rounding apart: the first batch of each input kind is checked against
  // forward_inference(). Falls back to forward_inference() where no cut qualifies or the boxes
  // are too large to save work (`*local` says which ran); off with CANDELA_NO_LOCAL_FORWARD=1.
  at::Tensor forward_local(const at::Tensor& batch, const at::Tensor& references, const at::Tensor& reference,
                           bool* local = nullptr) const;

  // forward()'s parameters after the input, in order; empty for a function model.
  std::vector<ForwardParameter> forward_parameters() const;
  // Captum's additional_forward_args, by name: a copy of this model (the module and every cache
  // shared) whose forward passes these tensors for the named parameters and their defaults for
  // the rest; so do every graph built from it (layer taps, rule engines, the inference graph),
  // each specialised on which parameters are given (an `if mask is None` branch folds away).
  // Each tensor holds one sample's value [1, ...], broadcast to every row of a batch, or [N, ...]
  // for the N samples of an explanation, which Explainer::explain then explains one at a time.
  // An unknown name, or a parameter without a default left out, is an error naming them.
  Model with_forward_args(std::vector<std::pair<std::string, at::Tensor>> args) const;
  // The given arguments, in forward()'s order.
  const std::vector<std::pair<std::string, at::Tensor>>& forward_args() const;

  const InputSpec& input_spec() const;
  void set_input_spec(InputSpec spec);
  const std::vector<std::string>& class_names() const;
  void set_class_names(std::vector<std::string> names);
  const std::vector<std::string>& feature_names() const;
  const std::string& name() const;    // file stem or given name
  const std::string& source() const;  // path it was loaded from, or ""
  std::string output_kind() const;    // "logits" (default), "probabilities", "regression"
  // The sidecar's "tokenizer" (text/tokenizer.h's TokenizerConfig as JSON, its vocab path made
  // relative to the working folder), or null when the model names none.
  const nlohmann::json& tokenizer() const;

  // Runs one forward pass on a zero sample of the input spec's shape and reports every
  // submodule's output shape, in execution order: the layers `--layer` can tap. A module
  // called more than once reports its last output. Requires a known input shape.
  std::vector<LayerInfo> layers() const;
  // Bytes of intermediate activations per sample, from the same pass (0 if unknown).
  int64_t activation_bytes_per_sample() const;

  torch::jit::Module* module() const;  // nullptr for function models
  // A cache of compiled helpers (tapped graphs, ...) shared by every copy of this Model and
  // safe to use from several threads: `make` runs once per key and set of given forward args.
  std::shared_ptr<void> cached(const std::string& key, const std::function<std::shared_ptr<void>()>& make) const;
  void to(const std::string& device);  // "cpu", "cuda", "cuda:1", "mps"
  std::string device() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
  std::shared_ptr<const std::vector<std::pair<std::string, at::Tensor>>> forward_args_;
};

}  // namespace candela
