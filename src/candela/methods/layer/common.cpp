#include "common.h"

#include <torch/csrc/autograd/autograd.h>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"

namespace candela::detail {

namespace {
std::string join(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}
}  // namespace

void check_one_layer(const std::vector<std::string>& layers, const char* method) {
  CANDELA_CHECK(!layers.empty(), method, " needs one layer: pass --layer NAME (see `candela info MODEL`).");
  if (layers.size() > 1) {
    std::string list;
    for (const auto& l : layers) list += (list.empty() ? "'" : ", '") + l + "'";
    throw InvalidArgument(str_cat(method, " explains one layer at a time, got ", layers.size(), " (", list,
                                  "): pass --layer once, and run the method once per layer."));
  }
  CANDELA_CHECK(!layers[0].empty(), method, " got an empty layer name: pass --layer NAME (see `candela info MODEL`).");
}

void check_neuron_selector(const std::vector<int64_t>& selector, const char* method) {
  CANDELA_CHECK(!selector.empty(), method, " needs a neuron: pass --option neuron_selector=I[,J,...], one index "
                "per dimension of the layer's output without the batch (see `candela info MODEL`).");
  for (auto i : selector)
    CANDELA_CHECK(i >= 0, method, ": neuron_selector ", join(selector), " has a negative index; indices start at 0.");
}

TappedOutputs tapped_forward(Evaluator& ev, const LayerTaps& taps, const char* stage, const at::Tensor& x) {
  std::vector<at::Tensor> outs, acts;
  ev.batched(stage, x.size(0), ev.batch_size(false), [&](int64_t b, int64_t e) {
    at::NoGradGuard no_grad;
    auto run = taps.forward(x.slice(0, b, e));
    outs.push_back(run.output.detach());
    acts.push_back(run.activations[0].detach());
  });
  return {at::cat(outs), at::cat(acts)};
}

PathRows path_rows(const at::Tensor& start, const at::Tensor& diff, const at::Tensor& alphas, int64_t begin,
                   int64_t end) {
  const int64_t n = start.size(0);
  at::Tensor r = at::arange(begin, end, at::TensorOptions().dtype(at::kLong).device(start.device()));
  PathRows p;
  p.sample = r.remainder(n);
  p.step = r.div(n, "floor");
  at::Tensor a = per_row(alphas.index_select(0, p.step), start);
  p.points = at::addcmul(start.index_select(0, p.sample), a, diff.index_select(0, p.sample));
  return p;
}

int64_t aligned_batch(const Evaluator& ev, int64_t cap, int64_t granule) {
  int64_t b = ev.batch_size(true, cap);
  if (granule > 1 && b >= granule) b -= b % granule;
  return b;
}

at::Tensor grad_or_zeros(const at::Tensor& scores, const at::Tensor& wrt) {
  if (!scores.requires_grad() || !wrt.requires_grad()) return at::zeros_like(wrt);
  auto g = torch::autograd::grad({scores.sum()}, {wrt}, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                 /*create_graph=*/false, /*allow_unused=*/true)[0];
  return g.defined() ? g : at::zeros_like(wrt);
}

int64_t neuron_offset(const std::vector<int64_t>& selector, at::IntArrayRef per_sample, const std::string& layer,
                      const char* method) {
  const int64_t dims = static_cast<int64_t>(per_sample.size());
  CANDELA_CHECK(static_cast<int64_t>(selector.size()) == dims, method, ": neuron_selector ", join(selector), " has ",
                selector.size(), " ind", selector.size() == 1 ? "ex" : "ices", " but layer '", layer,
                "' outputs shape ", shape_str(per_sample), " per sample; give ", dims, " ind",
                dims == 1 ? "ex" : "ices", ", one per dimension.");
  int64_t offset = 0;
  for (int64_t d = 0; d < dims; ++d) {
    CANDELA_CHECK(selector[d] >= 0 && selector[d] < per_sample[d], method, ": neuron_selector ", join(selector),
                  " is out of range for layer '", layer, "' with per-sample shape ", shape_str(per_sample),
                  ": index ", d, " must be in 0..", per_sample[d] - 1, ".");
    offset = offset * per_sample[d] + selector[d];
  }
  return offset;
}

at::Tensor select_neuron(const at::Tensor& activation, int64_t offset) {
  return activation.reshape({activation.size(0), -1}).select(1, offset);
}

}  // namespace candela::detail
