#include "candela/graph/local_forward.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/frozen_conv_add_relu_fusion.h>
#include <torch/csrc/jit/passes/frozen_linear_transpose.h>
#include <torch/csrc/jit/passes/frozen_ops_to_mkldnn.h>
#include <torch/csrc/jit/passes/remove_mutation.h>
#include <torch/script.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/graph_util.h"

namespace candela::detail {
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;
using Axis = LocalForward::Axis;

namespace {

struct Geo {
  Axis h, w;
};

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// A layer reading positions [q*s - p, q*s - p + d*(k - 1)] of what `in` describes.
Axis compose(const Axis& in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return {s * in.stride, p * in.stride + in.lo, (d * (k - 1) - p) * in.stride + in.hi};
}

std::optional<std::vector<int64_t>> int_pair(Value* v) {
  auto iv = torch::jit::toIValue(v);
  if (!iv || !iv->isIntList()) return std::nullopt;
  auto l = iv->toIntVector();
  if (l.size() == 1) l.push_back(l[0]);
  if (l.size() != 2) return std::nullopt;
  return l;
}

bool is_tensor(const Value* v) { return v->type()->isSubtypeOf(*c10::TensorType::get()); }

const std::set<std::string>& unary_ops() {
  static const std::set<std::string> ops = [] {
    std::set<std::string> s;
    for (const char* k : {"relu", "relu6", "sigmoid", "tanh", "gelu", "silu", "elu", "leaky_relu", "hardtanh",
                          "hardswish", "hardsigmoid", "clamp", "clamp_min", "clamp_max", "softplus", "mish", "neg",
                          "abs", "exp", "contiguous", "clone", "detach"}) {
      s.insert(std::string("aten::") + k);
      s.insert(std::string("aten::") + k + "_");
    }
    return s;
  }();
  return ops;
}

const std::set<std::string>& binary_ops() {
  static const std::set<std::string> ops = {"aten::add", "aten::sub", "aten::mul", "aten::div", "aten::add_",
                                            "aten::sub_", "aten::mul_", "aten::div_", "aten::maximum",
                                            "aten::minimum"};
  return ops;
}

// A value that does not depend on the input and is the same at every spatial position: a
// scalar, or a constant tensor of size 1 along the last two axes (a per-channel bias, not a
// positional embedding).
bool position_free(Value* v) {
  if (!is_tensor(v)) return true;
  auto iv = torch::jit::toIValue(v);
  if (!iv) return false;
  if (iv->isNone()) return true;
  if (!iv->isTensor()) return false;
  const at::Tensor t = iv->toTensor();
  if (t.dim() == 0) return true;
  if (t.dim() == 1) return t.size(0) == 1;
  return t.size(-1) == 1 && t.size(-2) == 1;
}

// A crop's early layers cost about twice their share of multiply-adds: small images run
// oneDNN's convolutions less efficiently, and the pasting copies. (resnet18 occlusion, 32x32
// windows: the cut after layer1 measured 9% faster than the one after layer2.0, which the plain
// count of multiply-adds preferred by 3%; twice the count picks layer1.)
constexpr double kCropCost = 2.0;

}  // namespace

struct LocalForward::Impl {
  std::shared_ptr<Graph> graph;  // mutation removed; the cuts' nodes live here
  std::vector<Node*> nodes;      // the top-level block, in order
  struct Conv {
    int index;
    double macs_per_position;
    int64_t sh, sw;
  };
  std::vector<Conv> convs;  // before the end of the local part
  struct Cut {
    int index;
    Value* value;
    Geo geo;
  };
  std::vector<Cut> cuts;

  struct Parts {
    std::shared_ptr<torch::jit::GraphFunction> prefix, suffix;
  };
  mutable std::mutex mutex;
  mutable std::map<int, Parts> parts;  // by cut, built on first use
  mutable at::Tensor cached_refs, cached_act;
  mutable int cached_cut = -1;
  mutable std::atomic<int> last_cut{-1};

  double macs_before(int index, int64_t H, int64_t W) const {
    double m = 0;
    for (const auto& c : convs)
      if (c.index <= index) m += c.macs_per_position * double(H / c.sh) * double(W / c.sw);
    return m;
  }
  Parts parts_of(const Cut& cut) const;
  at::Tensor reference_activation(const Cut& cut, const Parts& p, const at::Tensor& refs) const;
};

namespace {

// The geometry of `node`'s output when it keeps locality, from its inputs' (`geo`); nullopt when
// it does not (or is not understood). Adds a convolution's cost to `conv`.
std::optional<Geo> local_rule(Node* node, const std::unordered_map<const Value*, Geo>& geo,
                              std::optional<LocalForward::Impl::Conv>& conv) {
  const std::string kind = node->kind().toQualString();
  auto g = [&](Value* v) -> const Geo* {
    auto it = geo.find(v);
    return it == geo.end() ? nullptr : &it->second;
  };
  if (node->outputs().size() != 1 || !node->blocks().empty()) return std::nullopt;
  // Only input 0 may depend on the input, unless the rule says otherwise.
  auto rest_independent = [&](size_t from) {
    for (size_t k = from; k < node->inputs().size(); ++k)
      if (g(node->input(k))) return false;
    return true;
  };
  const Geo* in = node->inputs().empty() ? nullptr : g(node->input(0));

  if (kind == "aten::conv2d" || kind == "aten::_convolution") {
    if (!in || !rest_independent(1) || node->inputs().size() < 6) return std::nullopt;
    auto w = torch::jit::toIValue(node->input(1));
    if (!w || !w->isTensor() || w->toTensor().dim() != 4) return std::nullopt;
    if (kind == "aten::_convolution") {
      auto t = torch::jit::toIValue(node->input(6));
      if (!t || !t->isBool() || t->toBool()) return std::nullopt;  // transposed
    }
    auto stride = int_pair(node->input(3)), dilation = int_pair(node->input(5));
    std::optional<std::vector<int64_t>> pad = int_pair(node->input(4));
    if (!pad) {
      auto s = torch::jit::toIValue(node->input(4));
      if (s && s->isString() && s->toStringRef() == "valid") pad = std::vector<int64_t>{0, 0};
    }
    if (!stride || !dilation || !pad) return std::nullopt;
    const at::Tensor weight = w->toTensor();
    Geo out{compose(in->h, weight.size(2), (*stride)[0], (*pad)[0], (*dilation)[0]),
            compose(in->w, weight.size(3), (*stride)[1], (*pad)[1], (*dilation)[1])};
    conv = LocalForward::Impl::Conv{0, double(weight.numel()), out.h.stride, out.w.stride};
    return out;
  }
  if (kind == "aten::max_pool2d" || kind == "aten::avg_pool2d") {
    if (!in || !rest_independent(1) || node->inputs().size() < 4) return std::nullopt;
    auto k = int_pair(node->input(1)), pad = int_pair(node->input(3));
    auto s_iv = torch::jit::toIValue(node->input(2));
    if (!k || !pad || !s_iv || !s_iv->isIntList()) return std::nullopt;
    std::vector<int64_t> stride = s_iv->toIntVector();
    if (stride.empty()) stride = *k;
    if (stride.size() == 1) stride.push_back(stride[0]);
    std::vector<int64_t> dilation = {1, 1};
    if (kind == "aten::max_pool2d") {
      auto d = int_pair(node->input(4));
      if (!d) return std::nullopt;
      dilation = *d;
    }
    if (stride.size() != 2) return std::nullopt;
    return Geo{compose(in->h, (*k)[0], stride[0], (*pad)[0], dilation[0]),
               compose(in->w, (*k)[1], stride[1], (*pad)[1], dilation[1])};
  }
  if (kind == "aten::constant_pad_nd") {  // pads [w_left, w_right, h_top, h_bottom, (zeros)]
    auto pads = torch::jit::toIValue(node->input(1));
    if (!in || !rest_independent(1) || !pads || !pads->isIntList()) return std::nullopt;
    const auto p = pads->toIntVector();
    if (p.size() < 2 || p.size() % 2) return std::nullopt;
    for (size_t k = 4; k < p.size(); ++k)
      if (p[k] != 0) return std::nullopt;
    return Geo{p.size() >= 4 ? compose(in->h, 1, 1, p[2], 1) : in->h, compose(in->w, 1, 1, p[0], 1)};
  }
  if (kind == "aten::batch_norm" || kind == "aten::prelu") {  // per-channel constants
    if (!in || !rest_independent(1)) return std::nullopt;
    if (kind == "aten::batch_norm") {
      auto training = torch::jit::toIValue(node->input(5));
      if (!training || !training->isBool() || training->toBool()) return std::nullopt;
    }
    return *in;
  }
  if (kind == "aten::dropout" || kind == "aten::feature_dropout" || kind == "aten::alpha_dropout") {
    auto train = torch::jit::toIValue(node->input(2));
    if (!in || !rest_independent(1) || !train || !train->isBool() || train->toBool()) return std::nullopt;
    return *in;
  }
  if (unary_ops().count(kind)) {
    if (!in || !rest_independent(1)) return std::nullopt;
    for (size_t k = 1; k < node->inputs().size(); ++k)
      if (!position_free(node->input(k))) return std::nullopt;
    return *in;
  }
  if (binary_ops().count(kind) || kind == "prim::ListConstruct") {
    std::optional<Geo> out;
    for (auto* v : node->inputs()) {
      const Geo* gv = g(v);
      if (!gv) {
        if (kind == "prim::ListConstruct" || !position_free(v)) return std::nullopt;
        continue;
      }
      if (!is_tensor(v)) return std::nullopt;
      if (!out) {
        out = *gv;
        continue;
      }
      if (out->h.stride != gv->h.stride || out->w.stride != gv->w.stride) return std::nullopt;
      out->h.lo = std::max(out->h.lo, gv->h.lo), out->h.hi = std::max(out->h.hi, gv->h.hi);
      out->w.lo = std::max(out->w.lo, gv->w.lo), out->w.hi = std::max(out->w.hi, gv->w.hi);
    }
    return out;
  }
  if (kind == "aten::cat") {  // channels only
    auto dim = torch::jit::toIValue(node->input(1));
    if (!in || !dim || !dim->isInt() || (dim->toInt() != 1 && dim->toInt() != -3)) return std::nullopt;
    return *in;
  }
  return std::nullopt;
}

Node* top_level(Node* n, const Graph& g) {
  while (n->owningBlock() != g.block()) n = n->owningBlock()->owningNode();
  return n;
}

}  // namespace

LocalForward::LocalForward(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LocalForward::~LocalForward() = default;
size_t LocalForward::cuts() const { return impl_->cuts.size(); }
int LocalForward::last_cut() const { return impl_->last_cut.load(); }
std::vector<Axis> LocalForward::geometry(size_t cut) const {
  const Geo& g = impl_->cuts.at(cut).geo;
  return {g.h, g.w};
}

std::shared_ptr<const LocalForward> LocalForward::build(const std::shared_ptr<Graph>& frozen, std::string* why) {
  auto impl = std::make_unique<Impl>();
  impl->graph = frozen->copy();
  Graph& g = *impl->graph;
  if (g.inputs().size() != 2 || g.inputs()[0]->hasUses() || !is_tensor(g.inputs()[1])) {
    if (why) *why = "the frozen graph takes more than its input, or reads the module itself";
    return nullptr;
  }
  torch::jit::RemoveTensorMutation(impl->graph);
  torch::jit::EliminateDeadCode(impl->graph);
  Value* x = g.inputs()[1];
  std::unordered_map<const Node*, int> index;
  for (auto* n : g.nodes()) {
    index[n] = static_cast<int>(impl->nodes.size());
    impl->nodes.push_back(n);
  }
  const int count = static_cast<int>(impl->nodes.size());

  // Walk forward while every operation that reads the input keeps locality.
  std::unordered_map<const Value*, Geo> geo;
  geo[x] = Geo{};
  std::vector<std::pair<Value*, int>> defined = {{x, -1}};  // local values, where each is computed
  int stop = count;
  for (int i = 0; i < count; ++i) {
    Node* n = impl->nodes[i];
    std::vector<Value*> reads;
    free_inputs(n, reads);
    if (std::none_of(reads.begin(), reads.end(), [&](Value* v) { return geo.count(v) > 0; })) continue;
    std::optional<Impl::Conv> conv;
    auto out = local_rule(n, geo, conv);
    if (!out) {
      stop = i;
      if (why)
        *why = str_cat("the graph's operation ", i, " (", n->kind().toQualString(), ") is not local");
      break;
    }
    geo[n->output()] = *out;
    defined.emplace_back(n->output(), i);
    if (conv) {
      conv->index = i;
      impl->convs.push_back(*conv);
    }
  }
  // Where each local value is last read (the graph's output: after every node).
  std::unordered_map<const Value*, int> last_use;
  for (const auto& [v, at] : defined) {
    int last = at;
    for (const auto& use : v->uses()) {
      Node* u = top_level(use.user, g);
      last = std::max(last, u == g.return_node() ? INT_MAX : index.at(u));
    }
    last_use[v] = last;
  }
  // A cut after node i: its output is the only local value computed up to i and read after it.
  for (const auto& [v, at] : defined) {
    if (at < 0 || at >= stop || !is_tensor(v) || v->node()->kind() == c10::prim::ListConstruct) continue;
    if (last_use[v] <= at) continue;
    // A value whose only reader is an activation: cut after the activation instead (same
    // receptive field), so that oneDNN's convolution + add + ReLU fusion stays whole.
    if (v->uses().size() == 1 && unary_ops().count(v->uses()[0].user->kind().toQualString())) continue;
    bool alone = true;
    for (const auto& [w, wat] : defined)
      if (w != v && wat <= at && last_use[w] > at) alone = false;
    if (alone) impl->cuts.push_back({at, v, geo[v]});
  }
  if (impl->cuts.empty() || impl->convs.empty()) {
    if (why && why->empty()) *why = "no value of the graph's local part carries all of the input onward";
    if (why && !why->empty() && impl->cuts.empty()) *why += "; no cut qualifies before it";
    return nullptr;
  }
  return std::shared_ptr<const LocalForward>(new LocalForward(std::move(impl)));
}

LocalForward::Impl::Parts LocalForward::Impl::parts_of(const Cut& cut) const {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = parts.find(cut.index);
  if (it != parts.end()) return it->second;
  Graph& g = *graph;
  Value* x = g.inputs()[1];
  // Prefix: the input, every node up to the cut; its output, the cut's value.
  auto pg = std::make_shared<Graph>();
  std::unordered_map<Value*, Value*> env;
  env[x] = pg->addInput("x")->setType(x->type());
  for (int i = 0; i <= cut.index; ++i) {
    Node* c = pg->insertNode(pg->createClone(nodes[i], [&](Value* v) { return env.at(v); }));
    for (size_t k = 0; k < nodes[i]->outputs().size(); ++k) env[nodes[i]->outputs()[k]] = c->outputs()[k];
  }
  pg->registerOutput(env.at(cut.value));
  torch::jit::EliminateDeadCode(pg);
  // Suffix: the cut's value, the prefix's input-independent nodes (constants), the rest.
  auto sg = std::make_shared<Graph>();
  std::unordered_map<Value*, Value*> senv;
  senv[cut.value] = sg->addInput("a")->setType(cut.value->type());
  std::unordered_set<const Value*> dependent = {x};
  for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
    Node* n = nodes[i];
    std::vector<Value*> reads;
    free_inputs(n, reads);
    const bool dep = std::any_of(reads.begin(), reads.end(), [&](Value* v) { return dependent.count(v) > 0; });
    if (dep)
      for (auto* o : n->outputs()) dependent.insert(o);
    if (i <= cut.index && dep) continue;
    Node* c = sg->insertNode(sg->createClone(n, [&](Value* v) { return senv.at(v); }));
    for (size_t k = 0; k < n->outputs().size(); ++k) senv[n->outputs()[k]] = c->outputs()[k];
  }
  for (auto* v : g.outputs()) sg->registerOutput(senv.at(v));
  torch::jit::EliminateDeadCode(sg);
  for (auto* part : {&pg, &sg}) {  // what torch.jit.optimize_for_inference does to a frozen graph
    torch::jit::FuseFrozenConvAddRelu(*part);
    torch::jit::ConvertFrozenOpsToMKLDNN(*part);
    torch::jit::FrozenLinearTranspose(*part);
  }
  Parts p{std::make_shared<torch::jit::GraphFunction>("candela_local_prefix", pg, nullptr),
          std::make_shared<torch::jit::GraphFunction>("candela_local_suffix", sg, nullptr)};
  parts[cut.index] = p;
  return p;
}

at::Tensor LocalForward::Impl::reference_activation(const Cut& cut, const Parts& p, const at::Tensor& refs) const {
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (cached_cut == cut.index && cached_refs.defined() && cached_refs.sizes() == refs.sizes() &&
        cached_refs.scalar_type() == refs.scalar_type() && cached_refs.device() == refs.device() &&
        at::equal(cached_refs, refs))
      return cached_act;
  }
  at::Tensor act = (*p.prefix)({refs}).toTensor();
  if (act.is_mkldnn()) act = act.to_dense();
  std::lock_guard<std::mutex> lock(mutex);
  cached_refs = refs.clone();
  cached_act = act;
  cached_cut = cut.index;
  return act;
}

at::Tensor LocalForward::run(const at::Tensor& rows, const at::Tensor& references, const at::Tensor& reference) const {
  const Impl& im = *impl_;
  im.last_cut = -1;
  if (rows.dim() != 4 || references.dim() != 4 || rows.sizes().slice(1) != references.sizes().slice(1) ||
      rows.size(0) == 0)
    return {};
  const int64_t K = rows.size(0), H = rows.size(2), W = rows.size(3);
  if (reference.dim() != 1 || reference.size(0) != K || reference.max().item<int64_t>() >= references.size(0))
    return {};
  // Each row's box: the rows and columns where it differs from its reference (all of them
  // without one).
  const at::Tensor none = reference.lt(0).to(rows.device());
  const at::Tensor sample = reference.clamp_min(0).to(rows.device());
  const at::Tensor changed =
      rows.ne(references.index_select(0, sample)).any(1).logical_or_(none.view({K, 1, 1}));  // [K, H, W]
  const at::Tensor along_h = changed.any(2).cpu().contiguous(), along_w = changed.any(1).cpu().contiguous();
  struct Box {
    int64_t b0[2], b1[2];  // [b0, b1) per axis; empty when b0 == b1
  };
  std::vector<Box> boxes(K);
  auto span = [](const bool* p, int64_t n, int64_t& b0, int64_t& b1) {
    b0 = b1 = 0;
    int64_t first = -1, last = -1;
    for (int64_t i = 0; i < n; ++i)
      if (p[i]) {
        if (first < 0) first = i;
        last = i;
      }
    if (first >= 0) b0 = first, b1 = last + 1;
  };
  for (int64_t k = 0; k < K; ++k) {
    span(along_h.data_ptr<bool>() + k * H, H, boxes[k].b0[0], boxes[k].b1[0]);
    span(along_w.data_ptr<bool>() + k * W, W, boxes[k].b0[1], boxes[k].b1[1]);
  }
  // The positions a box changes at the cut ([a0, a1]), and the crop [c, c + len) they read.
  struct Crop {
    int64_t a0[2]{}, a1[2]{}, c[2]{}, len[2]{};
    bool empty = true;
  };
  auto crop_of = [](const Box& b, const Geo& geo, int64_t H, int64_t W, int64_t h, int64_t w) {
    Crop c;
    const int64_t size[2] = {H, W}, out[2] = {h, w};
    const Axis* ax[2] = {&geo.h, &geo.w};
    for (int j = 0; j < 2; ++j) {
      if (b.b1[j] <= b.b0[j]) return c;
      const Axis& a = *ax[j];
      c.a0[j] = std::max<int64_t>(0, ceil_div(b.b0[j] - a.hi, a.stride));
      c.a1[j] = std::min<int64_t>(out[j] - 1, floor_div(b.b1[j] - 1 + a.lo, a.stride));
      if (c.a0[j] > c.a1[j]) return c;
      const int64_t n0 = std::max<int64_t>(0, c.a0[j] * a.stride - a.lo);
      const int64_t n1 = std::min<int64_t>(size[j] - 1, c.a1[j] * a.stride + a.hi);
      c.c[j] = floor_div(n0, a.stride) * a.stride;
      c.len[j] = n1 + 1 - c.c[j];
    }
    c.empty = false;
    return c;
  };
  // The cut that saves the most multiply-adds, estimating each layer's size as the input's / stride.
  double total = im.macs_before(INT_MAX, H, W), best_saving = 0;
  const Impl::Cut* best = nullptr;
  for (const auto& cut : im.cuts) {
    const int64_t h = ceil_div(H, cut.geo.h.stride), w = ceil_div(W, cut.geo.w.stride);
    double area = 0;
    for (const auto& b : boxes) {
      Crop c = crop_of(b, cut.geo, H, W, h, w);
      if (!c.empty) area += double(c.len[0]) * double(c.len[1]);
    }
    const double saving = im.macs_before(cut.index, H, W) * (1.0 - kCropCost * area / (double(K) * H * W));
    if (saving > best_saving) best_saving = saving, best = &cut;
  }
  if (!best || best_saving < 0.1 * total) return {};

  const Impl::Parts parts = im.parts_of(*best);
  const at::Tensor act0 = im.reference_activation(*best, parts, references.contiguous());
  if (act0.dim() != 4) return {};
  at::Tensor acts = act0.index_select(0, sample);
  // Rows whose crops have the same size share a prefix call.
  std::map<std::pair<int64_t, int64_t>, std::vector<std::pair<int64_t, Crop>>> groups;
  for (int64_t k = 0; k < K; ++k) {
    Crop c = crop_of(boxes[k], best->geo, H, W, act0.size(2), act0.size(3));
    if (!c.empty) groups[{c.len[0], c.len[1]}].emplace_back(k, c);
  }
  for (const auto& [len, members] : groups) {
    std::vector<at::Tensor> crops;
    for (const auto& [k, c] : members)
      crops.push_back(rows[k].narrow(1, c.c[0], c.len[0]).narrow(2, c.c[1], c.len[1]));
    at::Tensor out = (*parts.prefix)({at::stack(crops)}).toTensor();
    if (out.is_mkldnn()) out = out.to_dense();
    for (size_t r = 0; r < members.size(); ++r) {
      const auto& [k, c] = members[r];
      int64_t from[2], n[2];
      for (int j = 0; j < 2; ++j) {
        from[j] = c.a0[j] - c.c[j] / (j == 0 ? best->geo.h.stride : best->geo.w.stride);
        n[j] = c.a1[j] - c.a0[j] + 1;
        if (from[j] < 0 || from[j] + n[j] > out.size(2 + j)) return {};  // the crop is short: run the model
      }
      acts[k].narrow(1, c.a0[0], n[0]).narrow(2, c.a0[1], n[1]).copy_(
          out[r].narrow(1, from[0], n[0]).narrow(2, from[1], n[1]));
    }
  }
  auto result = (*parts.suffix)({acts});
  if (!result.isTensor()) return {};
  im.last_cut = static_cast<int>(best - im.cuts.data());
  at::Tensor y = result.toTensor();
  return y.is_mkldnn() ? y.to_dense() : y;
}

}  // namespace candela::detail
