// Completeness bounds that hold for any trained fixture.
//
// Integrated Gradients and its layer and neuron variants approximate a path integral
// ∫₀¹ g(α) dα, g(α) = ∇F(b + α(x − b)) · (x − b), whose exact value is F(x) − F(b). How far a
// quadrature with n points lands from it depends on the weights the fixture was trained to
// (where the ReLUs switch along the path), so a fixed bound such as "1% at 50 steps" holds on one
// machine and fails on the next. What holds for every fixture is the Koksma inequality:
//   |∫₀¹ g − Σᵢ wᵢ g(αᵢ)| ≤ V(g) · sup_t |Σ_{αᵢ≤t} wᵢ − t|,
// with V(g) the total variation of g on [0, 1]. For Captum's rules with n points the supremum is
// at most the largest gap between nodes (Gauss–Legendre's cumulative weights interlace with its
// nodes, by the Chebyshev–Markov–Stieltjes separation theorem), which is below 2/n for
// gausslegendre (π/2n), riemann_* (1/n) and riemann_trapezoid (1/(n − 1)). V(g) is measured here
// on a fine grid with plain autograd, independently of the code under test. The sampled
// variation can only miss kinks closer than the grid step, so the tests allow it a factor 2.
#pragma once

#include <torch/script.h>

#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace candela::testing {

// F(points, i) maps a batch of points on row i's path [B, ...] to one scalar per point [B].
// Returns g at α = k/m, k = 0..m: [N, m + 1].
using PathFunction = std::function<at::Tensor(const at::Tensor& points, int64_t row)>;
inline at::Tensor path_integrand(const PathFunction& F, const at::Tensor& x, const at::Tensor& b, int64_t m = 2048) {
  at::AutoGradMode enable_grad(true);
  const int64_t n = x.size(0);
  const at::Tensor alphas = at::linspace(0.0, 1.0, m + 1, x.options());
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor xi = x[i].unsqueeze(0), bi = b.size(0) == 1 ? b : b[i].unsqueeze(0);
    const at::Tensor delta = xi - bi;
    std::vector<int64_t> shape(x.dim(), 1);
    shape[0] = m + 1;
    at::Tensor points = (bi + alphas.view(shape) * delta).detach().requires_grad_(true);
    at::Tensor grad = torch::autograd::grad({F(points, i).sum()}, {points})[0];
    rows.push_back((grad * delta).reshape({m + 1, -1}).sum(1).to(at::kDouble));
  }
  return at::stack(rows);
}

// Σₖ |g(αₖ₊₁) − g(αₖ)| per row: g's total variation as the grid sees it.
inline at::Tensor sampled_variation(const at::Tensor& g) {
  return (g.slice(1, 1) - g.slice(1, 0, -1)).abs().sum(1);
}

// F's column targets[i] for row i.
inline PathFunction target_logit(std::function<at::Tensor(const at::Tensor&)> logits, std::vector<int64_t> targets) {
  return [logits = std::move(logits), targets = std::move(targets)](const at::Tensor& points, int64_t row) {
    return logits(points).select(1, targets[row]);
  };
}

// The largest quadrature error a rule with n_steps points can make on a path whose integrand
// varies by `variation`, with a factor 2 for kinks the grid may miss, plus float32 rounding of the
// sum of `change` (F(x) − F(b)).
inline at::Tensor quadrature_error_bound(const at::Tensor& variation, int64_t n_steps, const at::Tensor& change) {
  return 2.0 * variation * (2.0 / static_cast<double>(n_steps)) + 1e-5 * change.abs().to(at::kDouble) + 1e-6;
}

// Captum's quadratures on [0, 1] with n points, derived here rather than taken from the code
// under test: Gauss-Legendre by Golub-Welsch (nodes are the eigenvalues of the Jacobi matrix of
// the Legendre polynomials, weights the squared first components of its eigenvectors), the
// Riemann rules in closed form (Captum's approximation_methods.py).
inline void reference_quadrature(const std::string& method, int64_t n, std::vector<double>& alphas,
                                 std::vector<double>& weights) {
  alphas.assign(n, 0.0);
  weights.assign(n, 0.0);
  if (method == "gausslegendre") {
    at::Tensor jacobi = at::zeros({n, n}, at::kDouble);
    for (int64_t k = 1; k < n; ++k) {
      const double b = k / std::sqrt(4.0 * k * k - 1.0);
      jacobi[k - 1][k] = b;
      jacobi[k][k - 1] = b;
    }
    auto [values, vectors] = at::linalg_eigh(jacobi);
    for (int64_t i = 0; i < n; ++i) {
      alphas[i] = (values[i].item<double>() + 1.0) / 2.0;
      weights[i] = vectors[0][i].item<double>() * vectors[0][i].item<double>();  // 2 v^2 on [-1, 1], halved
    }
    return;
  }
  const double h = method == "riemann_trapezoid" ? 1.0 / static_cast<double>(n - 1) : 1.0 / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    if (method == "riemann_left") alphas[i] = i * h;
    else if (method == "riemann_right") alphas[i] = (i + 1) * h;
    else if (method == "riemann_middle") alphas[i] = (i + 0.5) * h;
    else if (method == "riemann_trapezoid") alphas[i] = i * h;
    else throw std::runtime_error("no reference quadrature " + method);
    weights[i] = method == "riemann_trapezoid" && (i == 0 || i == n - 1) ? h / 2 : h;
  }
}

// A module's children in order, named by dotted path: runs a torch.nn.Sequential network (or a
// chain of them) up to a layer and from a layer, without Candela's taps.
class Chain {
 public:
  Chain(const torch::jit::Module& root, const std::vector<std::string>& parents) {
    for (const auto& p : parents)
      for (const auto& c : root.attr(p).toModule().named_children()) layers_.emplace_back(p + "." + c.name, c.value);
  }
  int64_t index(const std::string& name) const {
    for (size_t i = 0; i < layers_.size(); ++i)
      if (layers_[i].first == name) return static_cast<int64_t>(i);
    throw std::runtime_error("no layer " + name);
  }
  // Layers [from, to] inclusive.
  at::Tensor run(at::Tensor x, int64_t from, int64_t to) const {
    for (int64_t i = from; i <= to; ++i) x = layers_[i].second.forward({x}).toTensor();
    return x;
  }
  int64_t size() const { return static_cast<int64_t>(layers_.size()); }
  const std::string& name(int64_t i) const { return layers_[i].first; }
  // The module's class name, e.g. "ReLU", "Conv2d".
  std::string type(int64_t i) const { return layers_[i].second.type()->name()->name(); }
  at::Tensor up_to(const at::Tensor& x, const std::string& layer) const { return run(x, 0, index(layer)); }
  at::Tensor after(const at::Tensor& h, const std::string& layer) const {
    return run(h, index(layer) + 1, static_cast<int64_t>(layers_.size()) - 1);
  }

 private:
  mutable std::vector<std::pair<std::string, torch::jit::Module>> layers_;  // forward() is not const
};

}  // namespace candela::testing
