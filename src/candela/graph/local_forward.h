// Local re-evaluation (not public API): the model's outputs for rows that each equal a reference
// sample except inside a spatial box, as occlusion's windows and feature ablation's features
// make them, computing the network's early layers only around each box.
//
// A convolutional network's early layers are local: a change inside a box of the input changes
// a layer's output only where that output's receptive field meets the box. So the frozen
// inference graph is cut after such a layer into a prefix and a suffix; the prefix runs once on
// the reference, and for each row only on the crop of the input that the changed positions read
// (their receptive field, aligned to the layer's stride); those positions are pasted into the
// reference's activation and the suffix runs on it. Both parts are the inference graph's own
// operations (BatchNorm folded, oneDNN), so the outputs are the whole graph's, float32 rounding
// apart. Where the change is large the whole model is cheaper, and run() says so.
//
// The receptive fields are read from the graph, not measured: every operation before the cut
// must be a convolution or pooling whose geometry the graph states as constants, a constant
// padding (ONNX's asymmetric pads), an elementwise operation (activation, BatchNorm, addition
// of two local values, a per-channel constant), or a concatenation of channels; the input must
// reach the suffix only through the cut's value. The first operation of any other kind ends the
// part of the graph where a cut may go (a mean over the image, a reshape, a position-dependent
// constant such as a positional embedding).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace torch::jit {
struct Graph;
}

namespace candela::detail {

class LocalForward {
 public:
  // From a frozen forward graph (inputs: self, then the input batch [N, C, H, W]; weights as
  // constants; not yet converted to oneDNN). Null, with the reason in `why`, when no cut qualifies.
  static std::shared_ptr<const LocalForward> build(const std::shared_ptr<torch::jit::Graph>& frozen,
                                                   std::string* why);
  ~LocalForward();

  // The model's outputs for `rows` [K, C, H, W], row k differing from references[reference[k]]
  // only inside a box (found here, elementwise; reference -1: the whole image). Undefined when
  // re-running the boxes would not save a tenth of the multiply-adds before the last possible cut
  // (the caller then runs the whole model), or when a crop does not cover what its positions read.
  at::Tensor run(const at::Tensor& rows, const at::Tensor& references, const at::Tensor& reference) const;

  // The cuts found, and the one the last run() used (-1: none); for tests and benchmarks.
  size_t cuts() const;
  int last_cut() const;
  // The input region a cut's position (i, j) reads: [i*S - lo, i*S + hi] per axis (h then w).
  struct Axis {
    int64_t stride = 1, lo = 0, hi = 0;
  };
  std::vector<Axis> geometry(size_t cut) const;

  struct Impl;

 private:
  explicit LocalForward(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace candela::detail
