#include "candela/methods/gradient/integrated_gradients.h"

#include <cmath>
#include <map>

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "common.h"

namespace candela {
using detail::per_row;

void quadrature(const std::string& method, int64_t n, std::vector<double>& alphas, std::vector<double>& weights) {
  alphas.assign(n, 0.0);
  weights.assign(n, 0.0);
  if (method == "gausslegendre") {
    // Newton's method on the Legendre polynomial P_n, from Chebyshev-like starting points.
    for (int64_t i = 0; i < (n + 1) / 2; ++i) {
      double z = std::cos(M_PI * (i + 0.75) / (n + 0.5)), pp = 0.0;
      for (int iter = 0; iter < 100; ++iter) {
        double p1 = 1.0, p2 = 0.0;
        for (int64_t j = 1; j <= n; ++j) {
          double p3 = p2;
          p2 = p1;
          p1 = ((2.0 * j - 1.0) * z * p2 - (j - 1.0) * p3) / j;
        }
        pp = n * (z * p1 - p2) / (z * z - 1.0);
        double z1 = z;
        z = z1 - p1 / pp;
        if (std::abs(z - z1) < 1e-15) break;
      }
      double w = 2.0 / ((1.0 - z * z) * pp * pp);
      alphas[i] = 0.5 * (1.0 - z);  // ascending, like numpy's leggauss
      alphas[n - 1 - i] = 0.5 * (1.0 + z);
      weights[i] = weights[n - 1 - i] = 0.5 * w;
    }
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    weights[k] = 1.0 / n;
    if (method == "riemann_left") alphas[k] = static_cast<double>(k) / n;
    else if (method == "riemann_right") alphas[k] = static_cast<double>(k + 1) / n;
    else if (method == "riemann_middle") alphas[k] = (k + 0.5) / n;
    else if (method == "riemann_trapezoid") {
      alphas[k] = static_cast<double>(k) / (n - 1);
      weights[k] = (k == 0 || k == n - 1) ? 0.5 / (n - 1) : 1.0 / (n - 1);
    } else {
      throw InvalidArgument("unknown quadrature '" + method + "'.");
    }
  }
}

void IntegratedGradients::Options::validate() const {
  const bool riemann = method.rfind("riemann", 0) == 0;
  CANDELA_CHECK(n_steps >= (riemann ? 2 : 1), "n_steps must be at least ", riemann ? 2 : 1, " for ", method,
                ", got ", n_steps, ".");
  CANDELA_CHECK(n_steps <= 100000, "n_steps = ", n_steps, " is absurd; use at most 100000.");
  CANDELA_CHECK(internal_batch_size >= 0, "internal_batch_size must be >= 0 (0 = automatic).");
  CANDELA_CHECK(tolerance > 0 && tolerance < 1, "tolerance must be in (0, 1), got ", tolerance, ".");
  CANDELA_CHECK(max_steps >= 9 && max_steps <= 100000, "max_steps must be in [9, 100000], got ", max_steps, ".");
}

IntegratedGradients::IntegratedGradients(Options options) : options_(std::move(options)) { options_.validate(); }

nlohmann::json IntegratedGradients::options() const { return options_to_json(options_); }

Attribution IntegratedGradients::attribute(Evaluator& ev, const ExplainRequest& req) const {
  if (options_.method == "adaptive") return adaptive(ev, req);
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0), steps = options_.n_steps;
  const at::Tensor base = req.baseline.for_inputs(x, ev.model().input_spec().layout, 0);
  const at::Tensor diff = x - base;

  // f(x) and f(baseline): the target's top-1 class and the convergence delta need both.
  const at::Tensor ends = detail::forward_all(ev, "integrated_gradients: endpoints", at::cat({x, base}));
  const at::Tensor out_x = ends.slice(0, 0, n), out_b = ends.slice(0, n, 2 * n);
  const Target target = req.target.resolve(out_x);

  std::vector<double> alphas, weights;
  quadrature(options_.method, steps, alphas, weights);
  const auto opts = x.options();
  const at::Tensor alpha_t = at::tensor(alphas, at::kDouble).to(opts), weight_t = at::tensor(weights, at::kDouble).to(opts);

  // Row r is path point r / n of sample r % n (Captum's step-major order).
  at::Tensor total = at::zeros_like(x);
  ev.gradients(
      "integrated_gradients", n * steps,
      [&](int64_t b, int64_t e) {
        at::Tensor r = at::arange(b, e, opts.dtype(at::kLong));
        at::Tensor sample = r.remainder(n), step = r.div(n, "floor");
        at::Tensor a = alpha_t.index_select(0, step);
        at::Tensor in = base.index_select(0, sample) + per_row(a, x) * diff.index_select(0, sample);
        return Rows{in, sample, step};
      },
      target,
      [&](int64_t, int64_t, const Rows& rows, const at::Tensor& g, const at::Tensor&) {
        total.index_add_(0, rows.sample, g * per_row(weight_t.index_select(0, rows.aux), g));
      },
      options_.internal_batch_size);

  const at::Tensor global = total * diff;
  const at::Tensor idx = at::arange(n, opts.dtype(at::kLong));
  Attribution a;
  a.values = options_.multiply_by_inputs ? global : total;
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.convergence_delta =
      detail::sum_per_sample(global) - (target.scores(out_x, idx) - target.scores(out_b, idx)).to(global.dtype());
  a.extra = {{"quadrature", options_.method}, {"n_steps", steps}};
  return a;
}

// Adaptive composite Simpson along the path; see the header for the idea.
Attribution IntegratedGradients::adaptive(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0);
  const auto opts = x.options();
  const at::Tensor base = req.baseline.for_inputs(x, ev.model().input_spec().layout, 0);
  const at::Tensor diff = x - base;
  Target target = req.target;
  at::Tensor out_x = at::Tensor();
  if (target.kind() == Target::Kind::kTop1) {
    out_x = detail::forward_all(ev, "integrated_gradients: target", x);
    target = target.resolve(out_x);
  }

  struct Node {
    double f = 0, p = 0;  // target score, and gradient . (x - baseline)
    at::Tensor grad;
  };
  std::vector<std::map<double, Node>> nodes(n);
  std::vector<at::Tensor> out_rows(n);
  std::vector<std::pair<int64_t, double>> todo;
  std::vector<std::vector<std::pair<double, double>>> active(n), done(n);
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k <= 8; ++k) todo.emplace_back(i, k / 8.0);
    for (int k = 0; k < 4; ++k) active[i].emplace_back(k / 4.0, (k + 1) / 4.0);
  }

  auto evaluate = [&](const std::vector<std::pair<int64_t, double>>& points) {
    ev.gradients(
        "integrated_gradients (adaptive)", static_cast<int64_t>(points.size()),
        [&](int64_t b, int64_t e) {
          std::vector<int64_t> s;
          std::vector<double> al;
          for (int64_t r = b; r < e; ++r) s.push_back(points[r].first), al.push_back(points[r].second);
          at::Tensor sample = at::tensor(s, at::kLong).to(opts.device());
          at::Tensor a = at::tensor(al, at::kDouble).to(opts);
          return Rows{base.index_select(0, sample) + per_row(a, x) * diff.index_select(0, sample), sample, a};
        },
        target,
        [&](int64_t b, int64_t e, const Rows& rows, const at::Tensor& g, const at::Tensor& out) {
          at::Tensor f = target.scores(out, rows.sample).to(at::kDouble).cpu();
          at::Tensor p = detail::sum_per_sample(g * diff.index_select(0, rows.sample)).to(at::kDouble).cpu();
          for (int64_t r = b; r < e; ++r) {
            const auto [i, alpha] = points[r];
            nodes[i][alpha] = Node{f[r - b].item<double>(), p[r - b].item<double>(), g[r - b].clone()};
            if (alpha == 1.0) out_rows[i] = out[r - b].clone();
          }
        },
        options_.internal_batch_size);
  };

  std::vector<bool> converged(n, true);
  std::vector<double> tol(n, 0.0);
  for (bool first = true; !todo.empty(); first = false) {
    evaluate(todo);
    todo.clear();
    for (int64_t i = 0; i < n; ++i) {
      auto& nd = nodes[i];
      if (first) tol[i] = options_.tolerance * std::max(std::abs(nd[1.0].f - nd[0.0].f), 1e-8);
      std::vector<std::pair<double, double>> next;
      for (auto [a, b] : active[i]) {
        const double m = 0.5 * (a + b), h = b - a;
        const double err = h / 6.0 * (nd[a].p + 4.0 * nd[m].p + nd[b].p) - (nd[b].f - nd[a].f);
        const bool budget_left = static_cast<int64_t>(nd.size()) + 2 <= options_.max_steps;
        if (std::abs(err) <= tol[i] * h || h < 1e-9 || !budget_left) {
          if (std::abs(err) > tol[i] * h) converged[i] = false;
          done[i].emplace_back(a, b);
          continue;
        }
        next.emplace_back(a, m);
        next.emplace_back(m, b);
        todo.emplace_back(i, 0.5 * (a + m));
        todo.emplace_back(i, 0.5 * (m + b));
      }
      active[i] = std::move(next);
    }
  }

  at::Tensor total = at::zeros_like(x);
  std::vector<int64_t> steps(n);
  std::vector<bool> conv(n);
  for (int64_t i = 0; i < n; ++i) {
    auto& nd = nodes[i];
    for (auto [a, b] : done[i]) {
      const double h = b - a, m = 0.5 * (a + b);
      total[i] += (nd[a].grad + 4.0 * nd[m].grad + nd[b].grad) * (h / 6.0);
    }
    steps[i] = static_cast<int64_t>(nd.size());
    conv[i] = converged[i];
  }
  if (!out_x.defined()) out_x = at::stack(out_rows);
  const at::Tensor global = total * diff;
  std::vector<double> delta(n);
  for (int64_t i = 0; i < n; ++i) delta[i] = global[i].sum().item<double>() - (nodes[i][1.0].f - nodes[i][0.0].f);

  Attribution a;
  a.values = options_.multiply_by_inputs ? global : total;
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.convergence_delta = at::tensor(delta, at::kDouble).to(opts);
  a.extra = {{"quadrature", "adaptive"}, {"tolerance", options_.tolerance}, {"steps", steps}, {"converged", conv}};
  return a;
}

}  // namespace candela
