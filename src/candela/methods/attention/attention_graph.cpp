#include "candela/methods/attention/attention_graph.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"

namespace candela::detail {

at::Tensor fuse_heads(const at::Tensor& attention, const std::string& fusion) {
  CANDELA_CHECK_T(ShapeMismatch, attention.dim() == 4 && attention.size(2) == attention.size(3),
                  "an attention map must be [N, heads, L, L], got ", shape_str(attention.sizes()), ".");
  if (fusion == "mean") return attention.mean(1);
  if (fusion == "max") return std::get<0>(attention.max(1));
  if (fusion == "min") return std::get<0>(attention.min(1));
  throw InvalidArgument(str_cat("head_fusion must be mean, max or min, got '", fusion, "'."));
}

at::Tensor residual_attention(const at::Tensor& fused, double discard_ratio) {
  at::Tensor a = fused;
  const int64_t n = a.size(0), l = a.size(-1);
  const int64_t k = static_cast<int64_t>(static_cast<double>(l * l) * discard_ratio);
  if (k > 0) {
    at::Tensor flat = a.reshape({n, l * l});
    at::Tensor lowest = std::get<1>(flat.topk(k, 1, /*largest=*/false));
    at::Tensor keep = at::ones_like(flat).scatter_(1, lowest, 0.0);
    keep.select(1, 0).fill_(1.0);  // the [CLS]-[CLS] entry stays, as in vit-explain
    a = (flat * keep).reshape({n, l, l});
  }
  at::Tensor r = a + at::eye(l, a.options()).unsqueeze(0);
  return r / r.sum(-1, /*keepdim=*/true);
}

at::Tensor attention_rollout(const std::vector<at::Tensor>& attention, const std::string& fusion,
                             double discard_ratio) {
  CANDELA_CHECK(!attention.empty(), "attention rollout needs at least one attention map.");
  at::Tensor result;
  for (const auto& a : attention) {
    at::Tensor r = residual_attention(fuse_heads(a, fusion), discard_ratio);
    result = result.defined() ? at::bmm(r, result) : r;
  }
  return result;
}

at::Tensor gradient_rollout(const std::vector<at::Tensor>& attention, const std::vector<at::Tensor>& gradients) {
  CANDELA_CHECK(!attention.empty() && attention.size() == gradients.size(),
                "gradient rollout needs one gradient per attention map.");
  const int64_t n = attention[0].size(0), l = attention[0].size(-1);
  at::Tensor r = at::eye(l, attention[0].options()).unsqueeze(0).expand({n, l, l}).clone();
  for (size_t i = 0; i < attention.size(); ++i) {
    CANDELA_CHECK_T(ShapeMismatch, attention[i].sizes() == gradients[i].sizes() && attention[i].dim() == 4,
                    "attention map and gradient shapes differ: ", shape_str(attention[i].sizes()), " and ",
                    shape_str(gradients[i].sizes()), ".");
    at::Tensor cam = (gradients[i] * attention[i]).clamp_min(0).mean(1);
    r = r + at::bmm(cam, r);
  }
  return r;
}

namespace {

// Dinic's maximum flow on a small dense graph, in doubles.
class MaxFlow {
 public:
  explicit MaxFlow(int nodes) : adj_(static_cast<size_t>(nodes)), level_(nodes), next_(nodes) {}
  void add(int u, int v, double cap) {
    adj_[u].push_back(static_cast<int>(to_.size()));
    to_.push_back(v);
    cap_.push_back(cap);
    adj_[v].push_back(static_cast<int>(to_.size()));
    to_.push_back(u);
    cap_.push_back(0.0);
  }
  void save() { saved_ = cap_; }
  void restore() { cap_ = saved_; }
  double run(int s, int t) {
    double flow = 0;
    while (bfs(s, t)) {
      std::fill(next_.begin(), next_.end(), 0);
      while (double f = dfs(s, t, std::numeric_limits<double>::infinity())) flow += f;
    }
    return flow;
  }

 private:
  static constexpr double kEps = 1e-15;
  bool bfs(int s, int t) {
    std::fill(level_.begin(), level_.end(), -1);
    std::vector<int> queue = {s};
    level_[s] = 0;
    for (size_t h = 0; h < queue.size(); ++h) {
      const int u = queue[h];
      for (int e : adj_[u])
        if (cap_[e] > kEps && level_[to_[e]] < 0) {
          level_[to_[e]] = level_[u] + 1;
          queue.push_back(to_[e]);
        }
    }
    return level_[t] >= 0;
  }
  double dfs(int u, int t, double f) {
    if (u == t) return f;
    for (int& i = next_[u]; i < static_cast<int>(adj_[u].size()); ++i) {
      const int e = adj_[u][i], v = to_[e];
      if (cap_[e] <= kEps || level_[v] != level_[u] + 1) continue;
      if (double got = dfs(v, t, std::min(f, cap_[e])); got > 0) {
        cap_[e] -= got;
        cap_[e ^ 1] += got;
        return got;
      }
    }
    return 0;
  }
  std::vector<std::vector<int>> adj_;
  std::vector<int> to_;
  std::vector<double> cap_, saved_;
  std::vector<int> level_, next_;
};

}  // namespace

at::Tensor attention_flow(const std::vector<at::Tensor>& residual, int64_t query) {
  CANDELA_CHECK(!residual.empty(), "attention flow needs at least one attention map.");
  const int64_t n = residual[0].size(0), l = residual[0].size(-1);
  const int layers = static_cast<int>(residual.size());
  CANDELA_CHECK(query >= 0 && query < l, "token_index ", query, " is outside the sequence (length ", l, ").");
  at::Tensor out = at::zeros({n, l}, at::kDouble);
  auto acc = out.accessor<double, 2>();
  std::vector<at::Tensor> caps;
  for (const auto& r : residual) {
    CANDELA_CHECK_T(ShapeMismatch, r.dim() == 3 && r.size(0) == n && r.size(1) == l && r.size(2) == l,
                    "every residual attention map must be [N, L, L] with the same N and L, got ",
                    shape_str(r.sizes()), ".");
    caps.push_back(r.detach().to(at::kCPU, at::kDouble).contiguous());
  }
  const auto node = [l](int layer, int64_t token) { return static_cast<int>(layer * l + token); };
  for (int64_t s = 0; s < n; ++s) {
    MaxFlow g(static_cast<int>((layers + 1) * l));
    for (int layer = 0; layer < layers; ++layer) {
      auto c = caps[layer].accessor<double, 3>();
      for (int64_t i = 0; i < l; ++i)      // query position at layer + 1
        for (int64_t k = 0; k < l; ++k)    // key position at layer
          if (c[s][i][k] > 0) g.add(node(layer, k), node(layer + 1, i), c[s][i][k]);
    }
    g.save();
    for (int64_t j = 0; j < l; ++j) {
      g.restore();
      acc[s][j] = g.run(node(0, j), node(layers, query));
    }
  }
  return out;
}

std::vector<std::string> find_attention_layers(const Model& model) {
  std::vector<std::string> found;
  for (const auto& info : model.layers()) {
    const auto& s = info.output_shape;
    // Softmax modules (and ONNX Softmax nodes) with [N, heads, L, L]; functional softmaxes inside
    // modules ("MODULE:softmax") also with [N * heads, L, L], as nn.MultiheadAttention computes them.
    const bool module = info.type == "Softmax", functional = info.type == "softmax";
    if ((module || functional) && s.size() == 4 && s[2] == s[3]) found.push_back(info.name);
    else if (functional && s.size() == 3 && s[1] == s[2]) found.push_back(info.name);
  }
  CANDELA_CHECK(!found.empty(), "found no attention maps in the model: no softmax has an output [N, heads, L, L] (or "
                "[N * heads, L, L], as nn.MultiheadAttention's). Name the layers that output the attention "
                "probabilities with --layer (`candela info MODEL` lists them). A model traced under torch.no_grad() "
                "runs nn.MultiheadAttention's fused kernel, which hides the maps: trace it with gradients enabled.");
  return found;
}

}  // namespace candela::detail
