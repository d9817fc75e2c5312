#include "candela/robustness/refine.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/adam.h"
#include "candela/detail/tensor_util.h"
#include "candela/detail/text.h"
#include "candela/io/file.h"

namespace candela {

nlohmann::json ImageRegion::to_json() const { return {{"y0", y0}, {"x0", x0}, {"y1", y1}, {"x1", x1}}; }

bool ImageRegion::overlaps(const ImageRegion& o) const {
  return y0 < o.y1 && o.y0 < y1 && x0 < o.x1 && o.x0 < x1;
}

ImageRegion ImageRegion::parse(const std::string& text, const std::string& what) {
  CANDELA_CHECK(!text.empty(), what, " is empty; give y0,x0,y1,x1 (rows y0..y1-1, columns x0..x1-1) or an audit.json.");
  ImageRegion r;
  if (text.size() > 5 && text.substr(text.size() - 5) == ".json") {
    const nlohmann::json j = nlohmann::json::parse(read_file(text, 256 << 20), nullptr, /*allow_exceptions=*/false);
    CANDELA_CHECK(!j.is_discarded() && j.is_object() && j.contains("window") && j["window"].is_object(), what, " ",
                  text, " is not an audit.json with a \"window\" {y0, x0, y1, x1}; run `candela audit` first or give "
                  "y0,x0,y1,x1.");
    const nlohmann::json& w = j["window"];
    for (const char* k : {"y0", "x0", "y1", "x1"})
      CANDELA_CHECK(w.contains(k) && w[k].is_number_integer(), what, " ", text, ": window.", k, " is missing or not an integer.");
    r = {w["y0"].get<int64_t>(), w["x0"].get<int64_t>(), w["y1"].get<int64_t>(), w["x1"].get<int64_t>()};
  } else {
    const auto parts = detail::split(text, ',');
    std::vector<int64_t> v;
    for (const auto& p : parts) {
      long long i = 0;
      CANDELA_CHECK(detail::parse_int64(p, i), what, " must be y0,x0,y1,x1 (four integers) or an audit.json, got '",
                    text, "'.");
      v.push_back(i);
    }
    CANDELA_CHECK(v.size() == 4, what, " must be y0,x0,y1,x1 (four integers) or an audit.json, got '", text, "'.");
    r = {v[0], v[1], v[2], v[3]};
  }
  CANDELA_CHECK(r.y0 >= 0 && r.x0 >= 0 && r.y1 > r.y0 && r.x1 > r.x0, what, " ", r.to_json().dump(),
                " is empty or negative: it needs 0 <= y0 < y1 and 0 <= x0 < x1 (end-exclusive).");
  return r;
}

void RefineOptions::validate() const {
  CANDELA_CHECK(method == "rrr" || method == "randomize", "--method must be rrr or randomize, got '", method, "'.");
  CANDELA_CHECK(fill == "uniform" || fill == "shuffle", "--fill must be uniform or shuffle, got '", fill, "'.");
  CANDELA_CHECK(std::isfinite(l2_grads) && l2_grads >= 0, "--l2-grads must be >= 0, got ", l2_grads, ".");
  CANDELA_CHECK(std::isfinite(l2_params) && l2_params >= 0, "--l2-params must be >= 0, got ", l2_params, ".");
  CANDELA_CHECK(epochs >= 1, "--epochs must be >= 1, got ", epochs, ".");
  CANDELA_CHECK(std::isfinite(lr) && lr > 0, "--lr must be > 0, got ", lr, ".");
  CANDELA_CHECK(batch_size >= 1, "--batch-size must be >= 1, got ", batch_size, ".");
}

nlohmann::json RefineEpoch::to_json() const {
  return {{"epoch", epoch}, {"loss", loss}, {"cross_entropy", cross_entropy}, {"penalty", penalty},
          {"train_accuracy", train_accuracy}, {"seconds", seconds}};
}

std::string module_bytes(const torch::jit::Module& module) {
  std::ostringstream out;
  module.save(out);
  return out.str();
}

double top1_accuracy(const Model& model, const at::Tensor& inputs, const at::Tensor& labels) {
  if (!inputs.defined() || inputs.size(0) == 0) return std::numeric_limits<double>::quiet_NaN();
  at::NoGradGuard no_grad;
  int64_t correct = 0;
  const at::Tensor y = labels.to(at::kLong).reshape({-1});
  for (int64_t b = 0; b < inputs.size(0); b += 500) {
    const int64_t e = std::min(inputs.size(0), b + 500);
    const at::Tensor pred = model.forward(inputs.slice(0, b, e)).argmax(1).to(at::kCPU);
    correct += pred.eq(y.slice(0, b, e)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(inputs.size(0));
}

Refined refine_model(const Model& model, const at::Tensor& inputs, const at::Tensor& labels, const ImageRegion& region,
                     const RefineOptions& options, const std::function<void(const RefineEpoch&)>& on_epoch,
                     const CancelToken& cancel) {
  options.validate();
  CANDELA_CHECK(model.module() != nullptr, "refine retrains a TorchScript module's parameters; ", model.name(),
                " is a function, not a module.");
  const InputSpec& spec = model.input_spec();
  CANDELA_CHECK(inputs.defined() && inputs.dim() == 4 && (spec.layout == "NCHW" || spec.layout == "NHWC"),
                "refine needs training images [N, C, H, W] (or [N, H, W, C]) and a model whose input layout is NCHW or "
                "NHWC; got shape ", detail::shape_str(inputs.sizes()), " and layout '", spec.layout,
                "'. Give the layout with --layout NCHW, or add \"input\" to the model's .json.");
  const int64_t n = inputs.size(0);
  const bool nhwc = spec.layout == "NHWC";
  const int64_t h = inputs.size(nhwc ? 1 : 2), w = inputs.size(nhwc ? 2 : 3);
  CANDELA_CHECK(region.y1 <= h && region.x1 <= w, "the region ", region.to_json().dump(), " reaches outside the ", h,
                "x", w, " image; give rows < ", h, " and columns < ", w, ".");
  const at::Tensor y = labels.to(at::kCPU, at::kLong).reshape({-1});
  CANDELA_CHECK(y.size(0) == n, "refine needs one label per training image: ", n, " images, ", y.size(0), " labels.");
  CANDELA_CHECK(n >= 2, "refine needs at least 2 training images, got ", n, ".");

  // The region as a mask broadcastable over a batch: all channels of rows y0..y1-1, columns x0..x1-1.
  at::Tensor mask = at::zeros({1, h, w}, at::kFloat);
  mask.slice(1, region.y0, region.y1).slice(2, region.x0, region.x1).fill_(1);
  mask = nhwc ? mask.unsqueeze(3) : mask.unsqueeze(1);  // [1, H, W, 1] or [1, 1, H, W]
  const at::Tensor x_all = inputs.to(at::kCPU, at::kFloat).contiguous();
  const double lo = x_all.min().item<double>(), hi = x_all.max().item<double>();

  auto module = std::make_shared<torch::jit::Module>(model.module()->deepcopy());
  // Double backprop through TorchScript: plain interpretation, every op on the autograd tape.
  torch::jit::GraphOptimizerEnabledGuard plain_graph(false);
  module->train(true);
  std::vector<at::Tensor> params;
  for (at::Tensor p : module->parameters()) {
    p.set_requires_grad(true);
    params.push_back(p);
  }
  CANDELA_CHECK(!params.empty(), "the model has no parameters to retrain (a frozen TorchScript module?); save it with "
                "torch.jit.script or torch.jit.trace without torch.jit.freeze.");
  std::vector<detail::Adam> adam(params.size());
  for (auto& a : adam) a.lr = options.lr;
  {
    at::NoGradGuard no_grad;
    const at::Tensor probe = module->forward({x_all.slice(0, 0, 1)}).toTensor();
    CANDELA_CHECK(probe.dim() == 2 && probe.size(1) >= 2, "refine needs a classifier with outputs [N, classes]; got ",
                  detail::shape_str(probe.sizes()), ".");
    CANDELA_CHECK(y.min().item<int64_t>() >= 0 && y.max().item<int64_t>() < probe.size(1), "the labels must be class "
                  "indices 0..", probe.size(1) - 1, "; got values from ", y.min().item<int64_t>(), " to ",
                  y.max().item<int64_t>(), ".");
  }

  at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(options.seed));
  Refined out;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t epoch = 1; epoch <= options.epochs; ++epoch) {
    const at::Tensor order = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
    double sum_loss = 0, sum_ce = 0, sum_pen = 0;
    int64_t correct = 0;
    for (int64_t b = 0; b < n; b += options.batch_size) {
      if (cancel.cancelled()) throw Cancelled("refine cancelled in epoch " + std::to_string(epoch) + ".");
      const at::Tensor idx = order.slice(0, b, std::min(n, b + options.batch_size));
      at::Tensor xb = x_all.index_select(0, idx), yb = y.index_select(0, idx);
      if (options.method == "randomize") {
        at::Tensor fill;
        if (options.fill == "uniform") {
          fill = at::empty_like(xb).uniform_(lo, hi, gen);
        } else {
          fill = xb.index_select(0, at::randperm(xb.size(0), gen, at::TensorOptions().dtype(at::kLong)));
        }
        xb = xb * (1 - mask) + fill * mask;
      }
      const bool rrr = options.method == "rrr" && options.l2_grads > 0;
      if (rrr) xb = xb.clone().set_requires_grad(true);
      const at::Tensor logits = module->forward({xb}).toTensor();
      const at::Tensor logp = at::log_softmax(logits, 1);
      const at::Tensor ce = at::nll_loss(logp, yb, {}, at::Reduction::Sum);
      at::Tensor loss = ce;
      at::Tensor penalty = at::zeros({}, at::kFloat);
      if (rrr) {
        // d/dx sum_k log p_k(x), kept differentiable for the parameter update.
        const at::Tensor gx = torch::autograd::grad({logp.sum()}, {xb}, {}, /*retain_graph=*/true,
                                                    /*create_graph=*/true)[0];
        penalty = (gx * mask).pow(2).sum();
        loss = loss + options.l2_grads * penalty;
      }
      if (options.l2_params > 0) {
        at::Tensor sq = at::zeros({}, at::kFloat);
        for (const auto& p : params) sq = sq + p.pow(2).sum();
        loss = loss + options.l2_params * sq;
      }
      CANDELA_CHECK(std::isfinite(loss.item<double>()), "refine: the loss became ", loss.item<double>(), " in epoch ",
                    epoch, "; lower --lr", options.method == "rrr" ? " or --l2-grads." : ".");
      const auto grads = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                               /*allow_unused=*/true);
      for (size_t i = 0; i < params.size(); ++i)
        if (grads[i].defined()) adam[i].step(params[i], grads[i]);
      sum_loss += loss.item<double>();
      sum_ce += ce.item<double>();
      sum_pen += penalty.item<double>();
      correct += logits.argmax(1).eq(yb).sum().item<int64_t>();
    }
    RefineEpoch e;
    e.epoch = epoch;
    e.loss = sum_loss / static_cast<double>(n);
    e.cross_entropy = sum_ce / static_cast<double>(n);
    e.penalty = sum_pen / static_cast<double>(n);
    e.train_accuracy = static_cast<double>(correct) / static_cast<double>(n);
    e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    out.epochs.push_back(e);
    if (on_epoch) on_epoch(e);
  }
  module->eval();
  out.module = std::move(module);
  return out;
}

}  // namespace candela
