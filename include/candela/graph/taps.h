// Layer taps: read or replace any layer's output inside a model's forward pass, take
// gradients with respect to it, and re-run only the part of the network after a layer.
//
// A tap is an identity op (candela::tap) placed after the layer's output in a copy of the
// inlined forward graph; the model itself is never edited. What a tap records or substitutes
// lives in a per-call context on the calling thread, so explanations can run concurrently.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "candela/core/model.h"

namespace torch::jit {
struct Graph;
}

namespace candela {

class LayerTaps {
 public:
  // Taps after each named layer (dotted module path, as `candela info` lists them). An unknown
  // name is an error suggesting the closest ones; so is a module that forward() never calls,
  // one that runs only inside a branch or loop, and one whose output is not a tensor.
  // `rewrite`, when given, edits the tapped graph before it is compiled (a rule method swapping
  // ops for ones with modified backward passes; the taps are its candela::tap nodes).
  using GraphRewrite = std::function<void(torch::jit::Graph&)>;
  LayerTaps(const Model& model, std::vector<std::string> layers, const GraphRewrite& rewrite = {});
  // The same, compiled once per model and list of layers (and rewrite, named by `rewrite_key`)
  // and then reused: the JIT optimises a new graph over its first runs, which would otherwise be
  // paid by every explanation. The result calls the graph with `model`'s own forward arguments.
  static std::shared_ptr<const LayerTaps> of(const Model& model, const std::vector<std::string>& layers,
                                             const std::string& rewrite_key = "", const GraphRewrite& rewrite = {});
  ~LayerTaps();
  LayerTaps(const LayerTaps&) = delete;
  LayerTaps& operator=(const LayerTaps&) = delete;

  const std::vector<std::string>& layers() const { return layers_; }

  struct Run {
    at::Tensor output;                    // the model's output
    std::vector<at::Tensor> activations;  // each tapped layer's output, in the autograd graph
  };
  // One forward pass. A defined `replace[i]` is used instead of layer i's output (its batch
  // must match the input's); gradients flow into it when it requires grad. With `track` (and
  // grad mode on), a tapped output that does not require grad becomes a leaf that does, so the
  // gradient with respect to every tapped layer exists even when nothing before it requires
  // grad (token-id inputs, frozen weights); later taps stay connected to earlier ones.
  Run forward(const at::Tensor& x, const std::vector<at::Tensor>& replace = {}, bool track = false) const;

  // Suffix execution at the first tapped layer: run_prefix computes everything before the
  // cut once, run_suffix re-runs only what comes after it, for a batch of replacement
  // activations [K, ...] where row k belongs to input sample sample_of_row[k]. Values that
  // cross the cut (skip connections) are fed from the prefix. When the graph cannot be cut
  // (the layer sits after a value such as x.size(0) that the rest still uses), can_cut() is
  // false and cut_problem() says why: use forward() with `replace` instead.
  bool can_cut() const;
  const std::string& cut_problem() const;
  class Prefix;
  std::shared_ptr<const Prefix> run_prefix(const at::Tensor& x) const;
  at::Tensor prefix_activation(const Prefix& prefix) const;  // the cut layer's output [N, ...]
  at::Tensor run_suffix(const Prefix& prefix, const at::Tensor& activations, const at::Tensor& sample_of_row) const;

 private:
  struct Impl;
  LayerTaps(const LayerTaps& compiled, const Model& model);  // the same graph, another model copy's forward args
  std::shared_ptr<const Impl> impl_;
  std::vector<std::string> layers_;
  std::vector<std::pair<std::string, at::Tensor>> args_;  // Model::forward_args
};

}  // namespace candela
