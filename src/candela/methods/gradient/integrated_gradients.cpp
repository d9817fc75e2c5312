#include "candela/methods/gradient/integrated_gradients.h"

#include <cmath>
#include <map>
#include <numeric>

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

std::vector<std::string> quadrature_names() {
  return {"gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"};
}

void check_path_options(const char* method, int64_t n_steps, const std::string& quadrature, int64_t internal_batch_size,
                        int64_t riemann_min_steps) {
  const bool riemann = quadrature.rfind("riemann", 0) == 0;
  const int64_t least = riemann ? riemann_min_steps : 1;
  CANDELA_CHECK(n_steps >= least, method, ": n_steps must be at least ", least, " for ", quadrature, ", got ", n_steps,
                ".");
  CANDELA_CHECK(n_steps <= 100000, method, ": n_steps = ", n_steps, " is absurd; use at most 100000.");
  CANDELA_CHECK(internal_batch_size >= 0, method, ": internal_batch_size must be >= 0 (0 = automatic), got ",
                internal_batch_size, ".");
}

void IntegratedGradients::Options::validate() const {
  check_path_options("integrated_gradients", n_steps, method, internal_batch_size);
  CANDELA_CHECK(tolerance > 0 && tolerance < 1, "tolerance must be in (0, 1), got ", tolerance, ".");
  CANDELA_CHECK(max_steps >= 9 && max_steps <= 100000, "max_steps must be in [9, 100000], got ", max_steps, ".");
}

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

  // Row r is path point r / n of sample r % n (Captum's step-major order). Batches of
  // whole path points (the evaluator aligns them) are built by broadcasting and summed with
  // one matrix product; other batches go row by row through index_select / index_add.
  at::Tensor total = at::zeros_like(x);
  const auto whole = [n](int64_t b, int64_t e) { return b % n == 0 && e % n == 0; };
  std::vector<int64_t> block_shape(x.sizes().begin(), x.sizes().end());
  block_shape.insert(block_shape.begin(), -1);
  ev.gradients(
      "integrated_gradients", n * steps,
      [&](int64_t b, int64_t e) {
        at::Tensor r = at::arange(b, e, opts.dtype(at::kLong));
        at::Tensor sample = r.remainder(n);
        if (whole(b, e)) {
          at::Tensor a = per_row(alpha_t.slice(0, b / n, e / n), base.unsqueeze(0));
          at::Tensor in = at::addcmul(base.unsqueeze(0), a, diff.unsqueeze(0)).reshape(block_shape).flatten(0, 1);
          return Rows{in, sample, {}};
        }
        at::Tensor step = r.div(n, "floor");
        at::Tensor a = alpha_t.index_select(0, step);
        at::Tensor in = base.index_select(0, sample) + per_row(a, x) * diff.index_select(0, sample);
        return Rows{in, sample, step};
      },
      target,
      [&](int64_t b, int64_t e, const Rows& rows, const at::Tensor& g, const at::Tensor&) {
        if (whole(b, e)) {
          const int64_t k = (e - b) / n;
          total += at::matmul(weight_t.slice(0, b / n, e / n).view({1, k}), g.reshape({k, -1})).view_as(total);
        } else {
          total.index_add_(0, rows.sample, g * per_row(weight_t.index_select(0, rows.aux), g));
        }
      },
      options_.internal_batch_size, /*granule=*/n);

  const at::Tensor global = total * diff;
  const at::Tensor idx = at::arange(n, opts.dtype(at::kLong));
  Attribution a;
  a.values = options_.multiply_by_inputs ? global : total;
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.output_change = (target.scores(out_x, idx) - target.scores(out_b, idx)).to(global.dtype());
  a.convergence_delta = detail::sum_per_sample(global) - a.output_change;
  a.extra = {{"quadrature", options_.method}, {"n_steps", steps}};
  return a;
}

// Adaptive composite trapezoid along the path; see the header for the idea.
namespace {
constexpr int kInitialPieces = 4;
}
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
  std::vector<std::vector<std::pair<double, double>>> active(n);  // the path's partition
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k <= kInitialPieces; ++k) todo.emplace_back(i, static_cast<double>(k) / kInitialPieces);
    for (int k = 0; k < kInitialPieces; ++k)
      active[i].emplace_back(static_cast<double>(k) / kInitialPieces, static_cast<double>(k + 1) / kInitialPieces);
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

  // Each round, per sample: stop when the convergence delta (the sum of the pieces' signed
  // errors) meets the tolerance; otherwise halve the largest-error pieces that together
  // carry half of the summed |error| (Doerfler marking). Errors concentrate at the kinks of
  // a ReLU network, where the gradient jumps; halving such a piece halves its error.
  std::vector<bool> converged(n, false);
  std::vector<double> tol(n, 0.0);
  auto piece_error = [&](int64_t i, std::pair<double, double> piece) {
    auto& nd = nodes[i];
    const auto [a, b] = piece;
    return (b - a) / 2.0 * (nd[a].p + nd[b].p) - (nd[b].f - nd[a].f);
  };
  for (bool first = true; !todo.empty(); first = false) {
    evaluate(todo);
    todo.clear();
    for (int64_t i = 0; i < n; ++i) {
      if (converged[i] || active[i].empty()) continue;
      auto& nd = nodes[i];
      if (first) tol[i] = options_.tolerance * std::max(std::abs(nd[1.0].f - nd[0.0].f), 1e-8);
      auto& pieces = active[i];
      std::vector<double> err(pieces.size());
      double sum = 0, delta = 0;
      for (size_t j = 0; j < pieces.size(); ++j) {
        const double e = piece_error(i, pieces[j]);
        delta += e;
        sum += err[j] = std::abs(e);
      }
      if (std::abs(delta) <= tol[i]) {
        converged[i] = true;
        continue;
      }
      std::vector<size_t> order(pieces.size());
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return err[x] > err[y]; });
      std::vector<bool> split(pieces.size(), false);
      int64_t budget = options_.max_steps - static_cast<int64_t>(nd.size());
      double marked = 0;
      for (size_t j : order) {
        if (marked >= 0.5 * sum || budget < 1 || pieces[j].second - pieces[j].first < 1e-9) break;
        split[j] = true;
        marked += err[j];
        budget -= 1;
      }
      std::vector<std::pair<double, double>> next;
      for (size_t j = 0; j < pieces.size(); ++j) {
        const auto [a, b] = pieces[j];
        if (!split[j]) {
          next.emplace_back(a, b);
          continue;
        }
        const double m = 0.5 * (a + b);
        next.emplace_back(a, m);
        next.emplace_back(m, b);
        todo.emplace_back(i, m);
      }
      pieces = std::move(next);
    }
  }

  at::Tensor total = at::zeros_like(x);
  std::vector<int64_t> steps(n);
  std::vector<bool> conv(n);
  for (int64_t i = 0; i < n; ++i) {
    auto& nd = nodes[i];
    for (auto [a, b] : active[i]) {
      total[i] += (nd[a].grad + nd[b].grad) * ((b - a) / 2.0);
    }
    steps[i] = static_cast<int64_t>(nd.size());
    conv[i] = converged[i];
  }
  if (!out_x.defined()) out_x = at::stack(out_rows);
  const at::Tensor global = total * diff;
  std::vector<double> delta(n), change(n);
  for (int64_t i = 0; i < n; ++i) {
    change[i] = nodes[i][1.0].f - nodes[i][0.0].f;
    delta[i] = global[i].sum().item<double>() - change[i];
  }

  Attribution a;
  a.values = options_.multiply_by_inputs ? global : total;
  a.output = out_x;
  a.targets = target.classes(out_x);
  a.convergence_delta = at::tensor(delta, at::kDouble).to(opts);
  a.output_change = at::tensor(change, at::kDouble).to(opts);
  a.extra = {{"quadrature", "adaptive"}, {"tolerance", options_.tolerance}, {"steps", steps}, {"converged", conv}};
  return a;
}

}  // namespace candela
