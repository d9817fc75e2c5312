#include "candela/methods/perturbation/kernel_shap.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "candela/core/options.h"
#include "shapley_util.h"

namespace candela {

void KernelShap::Options::validate() const {
  CANDELA_CHECK(n_samples >= 0 && n_samples <= 100000000, "n_samples (coalitions) must be >= 0 (0 = auto, ",
                "2 * groups + 2048), got ", n_samples, ".");
  CANDELA_CHECK(perturbations_per_eval >= 0, "perturbations_per_eval must be >= 0 (0 = automatic), got ",
                perturbations_per_eval, ".");
  CANDELA_CHECK(std::isfinite(target_error) && target_error >= 0, "target_error must be >= 0 (0 = off), got ",
                target_error, ".");
  CANDELA_CHECK(target_error == 0 || standard_errors,
                "target_error needs standard errors: leave standard_errors on.");
  CANDELA_CHECK(max_samples >= 2, "max_samples must be >= 2, got ", max_samples, ".");
  CANDELA_CHECK(seed >= 0, "seed must be >= 0, got ", seed, ".");
}

namespace {

// One char per varying group: '1' = taken from the input.
using Key = std::string;

double binom(int64_t n, int64_t k) {
  return std::round(std::exp(std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0)));
}

// shap's KernelExplainer.explain: the coalitions and their kernel weights.
struct Plan {
  std::vector<Key> coal;
  std::vector<double> weight;
  int64_t fixed = 0;                        // enumerated coalitions come first
  double weight_left = 0;                   // kernel weight of the sampled part
  double touch_weight = 0;                  // weight one draw adds to each coalition it touches
  std::vector<std::vector<int64_t>> draws;  // coalitions each random draw touched
};

Plan make_plan(int64_t m, int64_t nsamples, uint64_t seed) {
  Plan plan;
  auto add = [&](const Key& k, double w) {
    plan.coal.push_back(k);
    plan.weight.push_back(w);
  };
  auto complement = [](Key k) {
    for (char& c : k) c = c == '1' ? '0' : '1';
    return k;
  };
  const int64_t sizes = m / 2, paired = (m - 1) / 2;  // ceil((M-1)/2), floor((M-1)/2)
  std::vector<double> wv(sizes);
  for (int64_t s = 1; s <= sizes; ++s) wv[s - 1] = (m - 1.0) / (s * (m - s)) * (s <= paired ? 2.0 : 1.0);
  const double total = std::accumulate(wv.begin(), wv.end(), 0.0);
  for (double& w : wv) w /= total;

  // Whole subset sizes (with their complements) while the budget allows.
  int64_t full = 0;
  double left = static_cast<double>(nsamples);
  std::vector<double> remaining = wv;
  for (int64_t s = 1; s <= sizes; ++s) {
    double nsub = binom(m, s) * (s <= paired ? 2.0 : 1.0);
    if (left * remaining[s - 1] / nsub < 1.0 - 1e-8) break;
    ++full;
    left -= nsub;
    if (remaining[s - 1] < 1.0) {
      const double r = 1.0 - remaining[s - 1];
      for (double& w : remaining) w /= r;
    }
    const double w = wv[s - 1] / binom(m, s) / (s <= paired ? 2.0 : 1.0);
    std::vector<int64_t> idx(s);
    std::iota(idx.begin(), idx.end(), 0);
    while (true) {
      Key k(m, '0');
      for (int64_t j : idx) k[j] = '1';
      add(k, w);
      if (s <= paired) add(complement(k), w);
      int64_t j = s - 1;  // next combination in lexicographic order (itertools.combinations)
      while (j >= 0 && idx[j] == m - s + j) --j;
      if (j < 0) break;
      ++idx[j];
      for (int64_t t = j + 1; t < s; ++t) idx[t] = idx[t - 1] + 1;
    }
  }
  plan.fixed = static_cast<int64_t>(plan.coal.size());

  // The rest sampled: a size from the remaining kernel weight, then a uniform subset of that
  // size and (for the paired sizes) its complement; a repeat adds weight instead.
  int64_t samples_left = nsamples - plan.fixed;
  if (full != sizes && samples_left > 0) {
    std::vector<double> rw(wv.begin() + full, wv.end());
    for (int64_t s = full; s < paired; ++s) rw[s - full] /= 2.0;
    const double sum = std::accumulate(rw.begin(), rw.end(), 0.0);
    detail::Rng rng(seed, 0x5a3b);
    std::unordered_map<Key, int64_t> used;
    std::vector<int64_t> perm(m);
    for (int64_t t = 0, tries = 4 * samples_left; t < tries && samples_left > 0; ++t) {
      double u = rng.uniform() * sum;
      int64_t ind = 0;
      while (ind + 1 < static_cast<int64_t>(rw.size()) && u >= rw[ind]) u -= rw[ind++];
      const int64_t size = ind + full + 1;
      std::iota(perm.begin(), perm.end(), 0);
      Key k(m, '0');
      for (int64_t j = 0; j < size; ++j) {
        std::swap(perm[j], perm[j + rng.below(m - j)]);
        k[perm[j]] = '1';
      }
      auto it = used.find(k);
      const bool fresh = it == used.end();
      int64_t slot;
      if (fresh) {
        slot = static_cast<int64_t>(plan.coal.size());
        used.emplace(k, slot);
        --samples_left;
        add(k, 1.0);
      } else {
        slot = it->second;
        plan.weight[slot] += 1.0;
      }
      plan.draws.push_back({slot});
      if (samples_left > 0 && size <= paired) {
        if (fresh) {
          --samples_left;
          add(complement(k), 1.0);
        } else {
          plan.weight[slot + 1] += 1.0;
        }
        plan.draws.back().push_back(slot + 1);
      }
    }
    plan.weight_left = std::accumulate(wv.begin() + full, wv.end(), 0.0);
    const double drawn = std::accumulate(plan.weight.begin() + plan.fixed, plan.weight.end(), 0.0);
    plan.touch_weight = plan.weight_left / drawn;
    for (size_t c = plan.fixed; c < plan.weight.size(); ++c) plan.weight[c] *= plan.touch_weight;
  }
  return plan;
}

// shap's KernelExplainer.solve without l1_reg: eliminate the last group with the constraint
// sum phi = fx - fnull and solve the weighted least squares in double through its normal
// equations (Cholesky; the pseudo-inverse when they are singular, as shap). Hand-written: the
// systems are tiny (groups^2) and one per input, where ATen's per-call overhead was most of
// the method's time on small models; LAPACK's gelsy also varies in the last bit from run to
// run, which breaks determinism.
class Fit {
 public:
  // z: k x m coalitions (1 = from the input), row-major; y: their values.
  Fit(const std::vector<double>& z, const std::vector<double>& y, const std::vector<double>& weight, int64_t m,
      double fx, double fnull)
      : m_(m), p_(m - 1), k_(static_cast<int64_t>(y.size())), delta_(fx - fnull), e_(k_ * p_), yt_(k_) {
    for (int64_t c = 0; c < k_; ++c) {
      const double* zc = &z[c * m_];
      for (int64_t j = 0; j < p_; ++j) e_[c * p_ + j] = zc[j] - zc[p_];
      yt_[c] = y[c] - fnull - zc[p_] * delta_;
    }
    std::vector<double> a(p_ * p_, 0.0), rhs(p_, 0.0);
    for (int64_t c = 0; c < k_; ++c) {
      const double w = weight[c];
      if (w == 0) continue;
      const double* ec = &e_[c * p_];
      for (int64_t r = 0; r < p_; ++r) {
        if (ec[r] == 0) continue;
        const double wr = w * ec[r];
        rhs[r] += wr * yt_[c];
        double* row = &a[r * p_];
        for (int64_t q = 0; q <= r; ++q) row[q] += wr * ec[q];
      }
    }
    for (int64_t r = 0; r < p_; ++r)
      for (int64_t q = 0; q < r; ++q) a[q * p_ + r] = a[r * p_ + q];
    normal_ = a;
    chol_ = cholesky(a);
    beta_ = chol_ ? chol_solve(a, rhs) : pinv_solve(rhs);
    chol_factor_ = std::move(a);
  }

  // phi over the m groups; sums to fx - fnull.
  std::vector<double> phi() const {
    std::vector<double> out(beta_);
    out.push_back(delta_ - std::accumulate(beta_.begin(), beta_.end(), 0.0));
    return out;
  }

  // Standard errors of phi, clustered by draw (see the header).
  std::vector<double> standard_errors(const std::vector<std::vector<int64_t>>& draws, double touch_weight) const {
    const auto nd = static_cast<int64_t>(draws.size());
    std::vector<double> se(m_, 0.0);
    if (nd < 2) return se;
    std::vector<double> resid(k_);
    for (int64_t c = 0; c < k_; ++c) {
      double fit = 0;
      for (int64_t j = 0; j < p_; ++j) fit += e_[c * p_ + j] * beta_[j];
      resid[c] = yt_[c] - fit;
    }
    std::vector<double> t(nd * m_, 0.0), s(p_);
    for (int64_t d = 0; d < nd; ++d) {
      std::fill(s.begin(), s.end(), 0.0);
      for (int64_t c : draws[d])
        for (int64_t j = 0; j < p_; ++j) s[j] += touch_weight * resid[c] * e_[c * p_ + j];
      const std::vector<double> td = chol_ ? chol_solve(chol_factor_, s) : pinv_solve(s);
      double sum = 0;
      for (int64_t j = 0; j < p_; ++j) t[d * m_ + j] = td[j], sum += td[j];
      t[d * m_ + p_] = -sum;
    }
    for (int64_t j = 0; j < m_; ++j) {
      double mean = 0, ss = 0;
      for (int64_t d = 0; d < nd; ++d) mean += t[d * m_ + j];
      mean /= static_cast<double>(nd);
      for (int64_t d = 0; d < nd; ++d) ss += (t[d * m_ + j] - mean) * (t[d * m_ + j] - mean);
      se[j] = std::sqrt(ss * static_cast<double>(nd) / static_cast<double>(nd - 1));
    }
    return se;
  }

 private:
  // In place: the lower factor L of a = L L^T; false when a is not (numerically) positive definite.
  bool cholesky(std::vector<double>& a) const {
    double scale = 0;
    for (int64_t r = 0; r < p_; ++r) scale = std::max(scale, a[r * p_ + r]);
    for (int64_t j = 0; j < p_; ++j) {
      double d = a[j * p_ + j];
      for (int64_t q = 0; q < j; ++q) d -= a[j * p_ + q] * a[j * p_ + q];
      if (!(d > 1e-12 * scale)) return false;
      d = std::sqrt(d);
      a[j * p_ + j] = d;
      for (int64_t r = j + 1; r < p_; ++r) {
        double v = a[r * p_ + j];
        for (int64_t q = 0; q < j; ++q) v -= a[r * p_ + q] * a[j * p_ + q];
        a[r * p_ + j] = v / d;
      }
    }
    return true;
  }
  std::vector<double> chol_solve(const std::vector<double>& l, std::vector<double> b) const {
    for (int64_t r = 0; r < p_; ++r) {
      for (int64_t q = 0; q < r; ++q) b[r] -= l[r * p_ + q] * b[q];
      b[r] /= l[r * p_ + r];
    }
    for (int64_t r = p_ - 1; r >= 0; --r) {
      for (int64_t q = r + 1; q < p_; ++q) b[r] -= l[q * p_ + r] * b[q];
      b[r] /= l[r * p_ + r];
    }
    return b;
  }
  std::vector<double> pinv_solve(const std::vector<double>& b) const {
    if (!pinv_.defined())
      pinv_ = at::linalg_pinv(at::tensor(normal_, at::kDouble).view({p_, p_})).contiguous();
    const double* pi = pinv_.data_ptr<double>();
    std::vector<double> out(p_, 0.0);
    for (int64_t r = 0; r < p_; ++r)
      for (int64_t q = 0; q < p_; ++q) out[r] += pi[r * p_ + q] * b[q];
    return out;
  }

  int64_t m_, p_, k_;
  double delta_;
  std::vector<double> e_, yt_;  // the eliminated design and response
  std::vector<double> normal_, chol_factor_, beta_;
  bool chol_ = false;
  mutable at::Tensor pinv_;
};

}  // namespace

Attribution KernelShap::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const auto seed = static_cast<uint64_t>(options_.seed);
  detail::ShapleyGame game(ev, req, seed, name());
  const int64_t n = game.inputs(), g = game.groups();

  std::vector<std::vector<int64_t>> vary(n);
  std::vector<int64_t> nsamp(n, 0), most(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    vary[i] = game.varying(i);
    const auto m = static_cast<int64_t>(vary[i].size());
    if (m < 2) continue;  // nothing to sample: phi is 0, or fx - fnull for the one group
    const int64_t all = m <= 30 ? (int64_t{1} << m) - 2 : int64_t{1} << 30;
    nsamp[i] = std::min(all, options_.n_samples > 0 ? options_.n_samples : 2 * m + 2048);
    most[i] = std::min(all, std::max(nsamp[i], options_.max_samples));
  }

  std::vector<std::unordered_map<Key, double>> cache(n);
  std::vector<Plan> plans(n);
  std::vector<std::vector<double>> phi(n, std::vector<double>(g, 0.0)), se(n, std::vector<double>(g, 0.0));
  std::vector<bool> active(n), converged(n, true);
  for (int64_t i = 0; i < n; ++i) {
    active[i] = vary[i].size() >= 2;
    if (vary[i].size() == 1) phi[i][vary[i][0]] = game.full(i) - game.empty(i);
  }
  std::vector<int64_t> evaluated(n, 0);

  while (std::any_of(active.begin(), active.end(), [](bool a) { return a; })) {
    // Plan each active input and evaluate the coalitions not seen before.
    std::vector<std::vector<Key>> missing(n);
    std::vector<int64_t> counts(n, 0);
    for (int64_t i = 0; i < n; ++i) {
      if (!active[i]) continue;
      plans[i] = make_plan(static_cast<int64_t>(vary[i].size()), nsamp[i], seed);
      std::unordered_map<Key, bool> queued;
      for (const Key& k : plans[i].coal)
        if (!cache[i].count(k) && queued.emplace(k, true).second) missing[i].push_back(k);
      counts[i] = static_cast<int64_t>(missing[i].size());
      evaluated[i] += counts[i];
    }
    auto masks = [&](int64_t i, int64_t b, int64_t e) {
      at::Tensor out = at::zeros({e - b, g}, at::TensorOptions().dtype(at::kBool));
      bool* p = out.data_ptr<bool>();
      for (int64_t r = b; r < e; ++r)
        for (size_t j = 0; j < vary[i].size(); ++j)
          if (missing[i][r][j] == '1') p[(r - b) * g + vary[i][j]] = true;
      return out;
    };
    const auto v = game.values(counts, masks, options_.perturbations_per_eval);

    for (int64_t i = 0; i < n; ++i) {
      if (!active[i]) continue;
      for (int64_t r = 0; r < counts[i]; ++r) cache[i][missing[i][r]] = v[i][r];
      const Plan& plan = plans[i];
      const auto m = static_cast<int64_t>(vary[i].size()), k = static_cast<int64_t>(plan.coal.size());
      std::vector<double> z(k * m), y(k);
      for (int64_t c = 0; c < k; ++c) {
        for (int64_t j = 0; j < m; ++j) z[c * m + j] = plan.coal[c][j] == '1' ? 1.0 : 0.0;
        y[c] = cache[i].at(plan.coal[c]);
      }
      const Fit fit(z, y, plan.weight, m, game.full(i), game.empty(i));
      const auto est = fit.phi();
      for (int64_t j = 0; j < m; ++j) phi[i][vary[i][j]] = est[j];
      const std::vector<double> err = options_.standard_errors ? fit.standard_errors(plan.draws, plan.touch_weight)
                                                               : std::vector<double>(m, std::nan(""));
      double worst = 0;
      for (int64_t j = 0; j < m; ++j) {
        se[i][vary[i][j]] = err[j];
        worst = std::max(worst, err[j]);
      }
      active[i] = false;
      if (options_.target_error > 0) {
        converged[i] = worst < options_.target_error;
        if (!converged[i] && nsamp[i] < most[i]) {
          const double ratio = worst / options_.target_error;
          nsamp[i] = std::min(most[i], std::max(nsamp[i] + 2, static_cast<int64_t>(std::ceil(nsamp[i] * ratio * ratio * 1.1))));
          active[i] = true;
        }
      }
    }
  }

  Attribution a = game.finish(phi);
  a.extra["standard_error"] = se;
  a.extra["n_samples"] = nsamp;
  a.extra["coalitions_evaluated"] = evaluated;
  std::vector<int64_t> nvary(n);
  for (int64_t i = 0; i < n; ++i) nvary[i] = static_cast<int64_t>(vary[i].size());
  a.extra["varying_groups"] = nvary;
  if (options_.target_error > 0) a.extra["converged"] = converged;
  return a;
}

}  // namespace candela
