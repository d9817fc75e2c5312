#include "candela/methods/perturbation/shapley_value_sampling.h"

#include <algorithm>
#include <cmath>

#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "shapley_util.h"

namespace candela {

void ShapleyValueSampling::Options::validate() const {
  CANDELA_CHECK(n_samples >= 1 && n_samples <= 1000000, "n_samples (orderings) must be in [1, 1000000], got ",
                n_samples, ".");
  CANDELA_CHECK(perturbations_per_eval >= 0, "perturbations_per_eval must be >= 0 (0 = automatic), got ",
                perturbations_per_eval, ".");
  CANDELA_CHECK(std::isfinite(target_error) && target_error >= 0, "target_error must be >= 0 (0 = off), got ",
                target_error, ".");
  CANDELA_CHECK(max_samples >= 2 && max_samples <= 1000000, "max_samples must be in [2, 1000000], got ",
                max_samples, ".");
  CANDELA_CHECK(target_error == 0 || max_samples >= n_samples, "max_samples (", max_samples,
                ") must be at least n_samples (", n_samples, ") when target_error is set.");
  CANDELA_CHECK(seed >= 0, "seed must be >= 0, got ", seed, ".");
}

Attribution ShapleyValueSampling::attribute(Evaluator& ev, const ExplainRequest& req) const {
  detail::ShapleyGame game(ev, req, static_cast<uint64_t>(options_.seed), name());
  const int64_t n = game.inputs(), g = game.groups(), chain = g - 1;
  const bool anti = options_.antithetic;
  auto whole = [anti](int64_t p) { return anti ? p + (p & 1) : p; };
  const int64_t most_samples = anti ? options_.max_samples - (options_.max_samples & 1) : options_.max_samples;

  // Ordering p is the same for every input (so an input's result does not depend on the
  // others); with antithetic, ordering 2q + 1 is ordering 2q reversed. rank[p][j] = position
  // of group j in ordering p.
  std::vector<std::vector<int64_t>> order;
  at::Tensor rank = at::empty({0, g}, at::TensorOptions().dtype(at::kLong));
  auto ensure = [&](int64_t count) {
    std::vector<at::Tensor> more;
    for (int64_t p = static_cast<int64_t>(order.size()); p < count; ++p) {
      std::vector<int64_t> o;
      if (anti && (p & 1)) {
        o.assign(order[p - 1].rbegin(), order[p - 1].rend());
      } else {
        auto gen = detail::seeded_generator(options_.seed, anti ? p / 2 : p);
        at::Tensor perm = at::randperm(g, gen, at::TensorOptions().dtype(at::kLong));
        o.assign(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + g);
      }
      at::Tensor r = at::empty({g}, at::TensorOptions().dtype(at::kLong));
      int64_t* rp = r.data_ptr<int64_t>();
      for (int64_t pos = 0; pos < g; ++pos) rp[o[pos]] = pos;
      order.push_back(std::move(o));
      more.push_back(r.unsqueeze(0));
    }
    if (!more.empty()) rank = at::cat({rank, at::cat(more)});
  };

  // contrib[i][p][j]: v(before j + j) - v(before j) in ordering p.
  std::vector<std::vector<std::vector<double>>> contrib(n);
  std::vector<int64_t> done(n, 0), wanted(n, whole(options_.n_samples));
  std::vector<std::vector<double>> se(n);
  std::vector<bool> converged(n, true);
  while (true) {
    std::vector<int64_t> counts(n);
    int64_t most = 0;
    for (int64_t i = 0; i < n; ++i) {
      counts[i] = (wanted[i] - done[i]) * chain;
      most = std::max(most, wanted[i]);
    }
    ensure(most);
    // Coalition k of input i: the first pos groups of ordering done[i] + k / (G - 1).
    auto masks = [&](int64_t i, int64_t b, int64_t e) {
      const at::Tensor k = at::arange(b, e, at::TensorOptions().dtype(at::kLong));
      const at::Tensor p = k.div(chain, "floor") + done[i], pos = k.remainder(chain) + 1;
      return rank.index_select(0, p) < pos.unsqueeze(1);
    };
    const auto v = game.values(counts, masks, options_.perturbations_per_eval);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t p = done[i]; p < wanted[i]; ++p) {
        std::vector<double> c(g);
        double prev = game.empty(i);
        for (int64_t pos = 1; pos <= g; ++pos) {
          const double cur = pos == g ? game.full(i) : v[i][(p - done[i]) * chain + pos - 1];
          c[order[p][pos - 1]] = cur - prev;
          prev = cur;
        }
        contrib[i].push_back(std::move(c));
      }
      done[i] = wanted[i];
      // Independent units: orderings, or antithetic pairs.
      std::vector<std::vector<double>> units;
      for (int64_t p = 0; p < done[i]; p += anti ? 2 : 1) {
        std::vector<double> u = contrib[i][p];
        if (anti)
          for (int64_t j = 0; j < g; ++j) u[j] = 0.5 * (u[j] + contrib[i][p + 1][j]);
        units.push_back(std::move(u));
      }
      se[i] = g == 1 ? std::vector<double>{0.0} : detail::standard_error(units, g);
      if (options_.target_error > 0) {
        double worst = 0;
        for (double s : se[i]) worst = std::isnan(s) ? INFINITY : std::max(worst, s);
        converged[i] = worst < options_.target_error;
        if (!converged[i] && done[i] < most_samples) {
          const double ratio = std::isfinite(worst) ? worst / options_.target_error : 2.0;
          const auto grown = static_cast<int64_t>(std::ceil(done[i] * ratio * ratio * 1.1));
          wanted[i] = std::min(most_samples, whole(std::max(grown, done[i] + (anti ? 2 : 1))));
        }
      }
    }
    if (std::equal(done.begin(), done.end(), wanted.begin())) break;
  }

  std::vector<std::vector<double>> phi(n, std::vector<double>(g, 0.0));
  for (int64_t i = 0; i < n; ++i) {
    for (const auto& c : contrib[i])
      for (int64_t j = 0; j < g; ++j) phi[i][j] += c[j];
    for (int64_t j = 0; j < g; ++j) phi[i][j] /= static_cast<double>(done[i]);
  }
  Attribution a = game.finish(phi);
  a.extra["standard_error"] = se;
  a.extra["n_samples"] = done;
  if (options_.target_error > 0) a.extra["converged"] = converged;
  return a;
}

}  // namespace candela
