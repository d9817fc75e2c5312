#include "candela/methods/perturbation/anchors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <functional>
#include <memory>
#include <random>
#include <set>

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"
#include "candela/methods/perturbation/feature_mask.h"

namespace candela {

namespace detail {

// alibi.utils.distributions.kl_bernoulli: both arguments clipped away from 0 and 1.
double kl_bernoulli(double p, double q) {
  const double m = std::clamp(p, 0.0000001, 0.9999999999999999), n = std::clamp(q, 0.0000001, 0.9999999999999999);
  return m * std::log(m / n) + (1.0 - m) * std::log((1.0 - m) / (1.0 - n));
}

// AnchorBaseBeam.dup_bernoulli: the largest q with KL(p, q) <= level, by bisection.
double kl_upper_bound(double p, double level) {
  double lm = p, um = std::min(p + std::sqrt(level / 2.0), 1.0);
  for (int j = 1; j < 17; ++j) {
    const double qm = (um + lm) / 2.0;
    if (kl_bernoulli(p, qm) > level) um = qm;
    else lm = qm;
  }
  return um;
}

// AnchorBaseBeam.dlow_bernoulli: the smallest q with KL(p, q) <= level.
double kl_lower_bound(double p, double level) {
  double um = p, lm = std::clamp(p - std::sqrt(level / 2.0), 0.0, 1.0);
  for (int j = 1; j < 17; ++j) {
    const double qm = (um + lm) / 2.0;
    if (kl_bernoulli(p, qm) > level) lm = qm;
    else um = qm;
  }
  return lm;
}

}  // namespace detail

namespace {

using detail::str_cat;
using Anchor = std::vector<int64_t>;  // sorted predicate ids
const auto kD = at::TensorOptions().dtype(at::kDouble);
const auto kL = at::TensorOptions().dtype(at::kLong);

double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
int64_t pick(std::mt19937_64& rng, int64_t n) { return static_cast<int64_t>(uniform01(rng) * n) % n; }

// What a sampler hands back for one anchor: which predicates each perturbation satisfies, the
// perturbations themselves (model inputs, flat rows) and the anchor's coverage when the sampler
// knows it exactly (-1 otherwise).
struct Draw {
  std::vector<uint8_t> binary;  // [n * predicates]
  at::Tensor inputs;            // double [n, D]
  double coverage = -1;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual int64_t predicates() const = 0;
  // `order`: the anchor's predicates (any order). `inputs`: whether to build the perturbations.
  virtual Draw draw(const std::vector<int64_t>& order, int64_t n, bool inputs, std::mt19937_64& rng) const = 0;
};

// ---- tabular: alibi's TabularSampler over quantile bins ------------------------------------------
struct Predicate {
  int64_t feature, lo, hi;  // bins lo..hi (inclusive)
  bool greater;             // "x > q_border" (else "x <= q_border")
  int64_t border;
};

class TabularSampler : public Sampler {
 public:
  TabularSampler(const at::Tensor& train, const std::vector<double>& percentiles, const at::Tensor& x) {
    train_ = train.to(at::kDouble).cpu().contiguous();
    m_ = train_.size(0);
    f_ = train_.size(1);
    const double* t = train_.data_ptr<double>();
    const at::Tensor q = at::tensor(percentiles, kD) / 100.0;
    qts_.resize(f_);
    mins_.assign(f_, 0);
    maxs_.assign(f_, 0);
    for (int64_t j = 0; j < f_; ++j) {
      const at::Tensor col = train_.select(1, j).contiguous();
      const at::Tensor qs = at::quantile(col, q);  // np.percentile's linear interpolation
      for (int64_t k = 0; k < qs.numel(); ++k) qts_[j].push_back(qs[k].item<double>());
      std::sort(qts_[j].begin(), qts_[j].end());
      qts_[j].erase(std::unique(qts_[j].begin(), qts_[j].end()), qts_[j].end());  // np.unique
      mins_[j] = col.min().item<double>();
      maxs_[j] = col.max().item<double>();
    }
    bins_.resize(m_ * f_);
    for (int64_t r = 0; r < m_; ++r)
      for (int64_t j = 0; j < f_; ++j) bins_[r * f_ + j] = bin(j, t[r * f_ + j]);
    // alibi's build_lookups: per column, one predicate per bin border.
    const at::Tensor xd = x.to(at::kDouble).cpu().contiguous();
    for (int64_t j = 0; j < f_; ++j) {
      const int64_t n_bins = static_cast<int64_t>(qts_[j].size()) + 1, b = bin(j, xd[j].item<double>());
      x_bins_.push_back(b);
      for (int64_t k = 0; k + 1 < n_bins; ++k) {
        if (b <= k) preds_.push_back({j, 0, k, false, k});
        else preds_.push_back({j, k + 1, n_bins - 1, true, k});
      }
    }
  }
  int64_t predicates() const override { return static_cast<int64_t>(preds_.size()); }
  const Predicate& predicate(int64_t p) const { return preds_[p]; }
  double border(int64_t feature, int64_t k) const { return qts_[feature][k]; }
  int64_t features() const { return f_; }

  Draw draw(const std::vector<int64_t>& order, int64_t n, bool inputs, std::mt19937_64& rng) const override {
    Draw d;
    std::vector<int64_t> rows(n);
    for (auto& r : rows) r = pick(rng, m_);
    std::vector<double> values(n * f_);
    const double* t = train_.data_ptr<double>();
    for (int64_t s = 0; s < n; ++s) std::copy(t + rows[s] * f_, t + rows[s] * f_ + f_, values.begin() + s * f_);
    if (!order.empty()) {
      // The anchor's columns with their allowed bins (predicates on one column intersect).
      std::vector<int64_t> cols;
      std::map<int64_t, std::pair<int64_t, int64_t>> range;
      for (int64_t p : order) {
        const Predicate& pr = preds_[p];
        auto it = range.find(pr.feature);
        if (it == range.end()) {
          cols.push_back(pr.feature);
          range[pr.feature] = {pr.lo, pr.hi};
        } else {
          it->second = {std::max(it->second.first, pr.lo), std::min(it->second.second, pr.hi)};
        }
      }
      auto allowed = [&](int64_t r, int64_t j) {
        const int64_t b = bins_[r * f_ + j];
        return b >= range[j].first && b <= range[j].second;
      };
      std::vector<int64_t> full;
      for (int64_t r = 0; r < m_; ++r) {
        bool ok = true;
        for (int64_t j : cols) ok = ok && allowed(r, j);
        if (ok) full.push_back(r);
      }
      d.coverage = static_cast<double>(full.size()) / m_;
      if (!full.empty()) {
        for (int64_t s = 0; s < n; ++s) {
          const int64_t r = full[pick(rng, static_cast<int64_t>(full.size()))];
          for (int64_t j : cols) values[s * f_ + j] = t[r * f_ + j];
        }
      } else {
        for (int64_t j : cols) {
          std::vector<int64_t> ok;
          for (int64_t r = 0; r < m_; ++r)
            if (allowed(r, j)) ok.push_back(r);
          for (int64_t s = 0; s < n; ++s)
            values[s * f_ + j] = ok.empty() ? mins_[j] + uniform01(rng) * (maxs_[j] - mins_[j])
                                            : t[ok[pick(rng, static_cast<int64_t>(ok.size()))] * f_ + j];
        }
      }
    }
    const int64_t np = predicates();
    d.binary.assign(n * np, 0);
    for (int64_t s = 0; s < n; ++s)
      for (int64_t p = 0; p < np; ++p) {
        const Predicate& pr = preds_[p];
        const int64_t b = bin(pr.feature, values[s * f_ + pr.feature]);
        d.binary[s * np + p] = b >= pr.lo && b <= pr.hi;
      }
    if (inputs) d.inputs = at::tensor(values, kD).view({n, f_});
    return d;
  }

 private:
  int64_t bin(int64_t j, double v) const {  // np.searchsorted(qts, v), side='left'
    return std::lower_bound(qts_[j].begin(), qts_[j].end(), v) - qts_[j].begin();
  }
  at::Tensor train_;
  int64_t m_ = 0, f_ = 0;
  std::vector<std::vector<double>> qts_;
  std::vector<double> mins_, maxs_;
  std::vector<int64_t> bins_, x_bins_;
  std::vector<Predicate> preds_;
};

// ---- image: alibi's AnchorImage over superpixels --------------------------------------------------
class ImageSampler : public Sampler {
 public:
  ImageSampler(at::Tensor x, at::Tensor hidden, at::Tensor segment, int64_t g, double p_sample)
      : x_(std::move(x)), hidden_(std::move(hidden)), segment_(std::move(segment)), g_(g), p_(p_sample) {}
  int64_t predicates() const override { return g_; }
  Draw draw(const std::vector<int64_t>& order, int64_t n, bool inputs, std::mt19937_64& rng) const override {
    Draw d;
    d.binary.resize(n * g_);
    for (auto& b : d.binary) b = uniform01(rng) >= p_;  // hidden with probability p_sample
    for (int64_t s = 0; s < n; ++s)
      for (int64_t p : order) d.binary[s * g_ + p] = 1;
    if (inputs) {
      at::Tensor z = at::empty({n, g_ + 1}, at::TensorOptions().dtype(at::kBool));
      z.slice(1, 0, g_).copy_(at::tensor(std::vector<int64_t>(d.binary.begin(), d.binary.end()), kL)
                                  .view({n, g_}).to(at::kBool));
      z.select(1, g_).fill_(true);  // elements in no segment stay as they are
      const at::Tensor keep = z.index_select(1, segment_);
      d.inputs = at::where(keep, x_.unsqueeze(0), hidden_.unsqueeze(0));
    }
    return d;
  }

 private:
  at::Tensor x_, hidden_, segment_;  // [D], [D], int64 [D] (g_ = no segment)
  int64_t g_;
  double p_;
};

// ---- AnchorBaseBeam ---------------------------------------------------------------------------------
struct ArmState {
  std::vector<int64_t> idx;  // rows of the cache where the anchor holds
  double nsamples = 0, positives = 0, coverage = 0;
  std::vector<int64_t> coverage_idx;
  std::vector<int64_t> order;  // the predicates in the order they were added
  bool has_order = false, sampled = false;
  at::Tensor covered_true, covered_false;
};

double compute_beta(int64_t n_features, int64_t t, double delta) {
  const double temp = std::log(405.5 * n_features * std::pow(static_cast<double>(t), 1.1) / delta);
  return temp + std::log(temp);
}

class AnchorSearch {
 public:
  // `labels`: 1 where the model gives the instance's class to a perturbation (rows double [n, D]).
  using Labeler = std::function<std::vector<uint8_t>(const at::Tensor&)>;
  AnchorSearch(const Sampler& sampler, Labeler labeler, const AnchorsOptions& o, std::mt19937_64& rng)
      : s_(sampler), labeler_(std::move(labeler)), o_(o), rng_(rng), p_(sampler.predicates()) {}

  nlohmann::json run(std::vector<int64_t>& anchor_order, std::vector<double>& precisions) {
    // Coverage set: perturbations of the empty anchor, no model calls.
    Draw cov = s_.draw({}, o_.coverage_samples, false, rng_);
    coverage_ = std::move(cov.binary);
    n_cov_ = o_.coverage_samples;
    state_[Anchor{}].has_order = true;

    auto [pos0, total0] = draw_samples(std::vector<Anchor>(1), o_.min_samples_start);
    double pos = pos0[0], total = total0[0];
    double mean = pos / total, beta = std::log(1.0 / o_.delta);
    double lb = detail::kl_lower_bound(mean, beta / total);
    while (mean > o_.threshold && lb < o_.threshold - o_.tau) {
      auto [np, nt] = draw_samples(std::vector<Anchor>(1), o_.batch_size);
      pos += np[0];
      total += nt[0];
      mean = pos / total;
      lb = detail::kl_lower_bound(mean, beta / total);
    }
    empty_precision_ = mean;
    if (lb > o_.threshold) return metadata(Anchor{}, true);

    int64_t current_size = 1;
    double best_coverage = -1;
    std::map<int64_t, std::vector<Anchor>> best_of_size = {{0, {}}};
    Anchor best_anchor;
    bool found = false;
    const int64_t max_size = o_.max_anchor_size > 0 ? o_.max_anchor_size : p_;
    while (current_size <= max_size) {
      std::vector<Anchor> anchors;
      for (auto& a : propose(best_of_size[current_size - 1]))
        if (state_[a].coverage > best_coverage) anchors.push_back(a);
      if (anchors.empty()) break;
      const std::vector<int64_t> chosen =
          kllucb(anchors, o_.tau, o_.delta, o_.batch_size, std::min<int64_t>(o_.beam_size, anchors.size()));
      auto& best = best_of_size[current_size];
      best.clear();
      for (int64_t i : chosen) best.push_back(anchors[i]);
      const size_t k = best.size();
      std::vector<double> positives(k), n(k), means(k), lbs(k), ubs(k), coverages(k), kl(k);
      const double b = std::log(1.0 / (o_.delta / (1 + (o_.beam_size - 1) * p_)));
      for (size_t i = 0; i < k; ++i) {
        const ArmState& st = state_[best[i]];
        positives[i] = st.positives;
        n[i] = st.nsamples;
        coverages[i] = st.coverage;
        means[i] = positives[i] / n[i];
        kl[i] = b / n[i];
        lbs[i] = detail::kl_lower_bound(means[i], kl[i]);
        ubs[i] = detail::kl_upper_bound(means[i], kl[i]);
      }
      const double eps_stop = 0.05;  // AnchorBaseBeam.anchor_beam's epsilon_stop (not exposed by alibi)
      auto to_sample = [&](size_t i) {
        return (means[i] >= o_.threshold && lbs[i] < o_.threshold - eps_stop) ||
               (means[i] < o_.threshold && ubs[i] >= o_.threshold + eps_stop);
      };
      for (;;) {
        std::vector<size_t> more;
        for (size_t i = 0; i < k; ++i)
          if (to_sample(i)) more.push_back(i);
        if (more.empty()) break;
        std::vector<Anchor> selected;
        for (size_t i : more) selected.push_back(best[i]);
        auto [dp, dn] = draw_samples(selected, o_.batch_size);
        for (size_t j = 0; j < more.size(); ++j) {
          const size_t i = more[j];
          positives[i] += dp[j];
          n[i] += dn[j];
          means[i] = positives[i] / n[i];
          kl[i] = b / n[i];
          lbs[i] = detail::kl_lower_bound(means[i], kl[i]);
          ubs[i] = detail::kl_upper_bound(means[i], kl[i]);
        }
      }
      int64_t best_idx = -1;
      for (size_t i = 0; i < k; ++i) {
        const bool valid = means[i] >= o_.threshold && lbs[i] > o_.threshold - eps_stop;
        if (valid && coverages[i] > best_coverage && (best_idx < 0 || coverages[i] > coverages[best_idx]))
          best_idx = static_cast<int64_t>(i);
      }
      if (best_idx >= 0) {
        best_coverage = coverages[best_idx];
        best_anchor = best[best_idx];
        found = true;
        if (best_coverage == 1.0 || o_.stop_on_first) break;
      }
      current_size += 1;
    }
    if (!found) {
      // The best candidate by precision over every round.
      std::vector<Anchor> all;
      for (int64_t i = 0; i < current_size; ++i)
        for (auto& a : best_of_size[i]) all.push_back(a);
      if (!all.empty()) best_anchor = all[kllucb(all, o_.tau, o_.delta, o_.batch_size, 1)[0]];
    }
    nlohmann::json meta = metadata(best_anchor, found);
    anchor_order = state_[best_anchor].order;
    precisions = partial_precisions_;
    return meta;
  }

  int64_t model_calls() const { return calls_; }
  double empty_precision() const { return empty_precision_; }
  std::vector<double> partial_precisions() const { return partial_precisions_; }

 private:
  ArmState& arm(const Anchor& a) {
    ArmState& st = state_[a];
    if (!st.has_order) st.order = a, st.has_order = true;
    return st;
  }

  // Draws n perturbations for each anchor (one model pass for all), records them.
  std::pair<std::vector<double>, std::vector<double>> draw_samples(const std::vector<Anchor>& anchors, int64_t n) {
    std::vector<Draw> draws;
    std::vector<at::Tensor> inputs;
    for (const auto& a : anchors) {
      draws.push_back(s_.draw(arm(a).order, n, true, rng_));
      inputs.push_back(draws.back().inputs);
    }
    const at::Tensor all = at::cat(inputs);
    const std::vector<uint8_t> labels = labeler_(all);
    calls_ += all.size(0);
    std::vector<double> pos, total;
    for (size_t k = 0; k < anchors.size(); ++k) {
      ArmState& st = state_[anchors[k]];
      const int64_t start = static_cast<int64_t>(labels_.size());
      double p = 0;
      std::vector<int64_t> t_rows, f_rows;
      for (int64_t s = 0; s < n; ++s) {
        const uint8_t l = labels[k * n + s];
        p += l;
        labels_.push_back(l);
        st.idx.push_back(start + s);
        auto& rows = l ? t_rows : f_rows;
        if (static_cast<int64_t>(rows.size()) < o_.n_covered_ex) rows.push_back(s);
      }
      data_.insert(data_.end(), draws[k].binary.begin(), draws[k].binary.end());
      st.nsamples += n;
      st.positives += p;
      if (draws[k].coverage > -1) st.coverage = draws[k].coverage;
      st.covered_true = draws[k].inputs.index_select(0, at::tensor(t_rows, kL));
      st.covered_false = draws[k].inputs.index_select(0, at::tensor(f_rows, kL));
      st.sampled = true;
      pos.push_back(p);
      total.push_back(static_cast<double>(n));
    }
    return {pos, total};
  }

  std::vector<Anchor> propose(const std::vector<Anchor>& previous) {
    const int64_t rows = static_cast<int64_t>(labels_.size());
    std::vector<Anchor> out;
    if (previous.empty()) {
      for (int64_t x = 0; x < p_; ++x) {
        ArmState& st = state_[{x}];
        st = ArmState{};
        for (int64_t r = 0; r < rows; ++r)
          if (data_[r * p_ + x]) st.idx.push_back(r), st.positives += labels_[r];
        st.nsamples = static_cast<double>(st.idx.size());
        st.order = {x};
        st.has_order = true;
        for (int64_t r = 0; r < n_cov_; ++r)
          if (coverage_[r * p_ + x]) st.coverage_idx.push_back(r);
        st.coverage = static_cast<double>(st.coverage_idx.size()) / n_cov_;
        out.push_back({x});
      }
      return out;
    }
    std::set<Anchor> seen;
    for (int64_t f = 0; f < p_; ++f)
      for (const auto& t : previous) {
        if (std::find(t.begin(), t.end(), f) != t.end()) continue;
        Anchor nt = t;
        nt.insert(std::upper_bound(nt.begin(), nt.end(), f), f);
        if (!seen.insert(nt).second) continue;
        out.push_back(nt);
        const ArmState& parent = state_[t];
        const ArmState& single = state_[{f}];
        ArmState st;
        st.order = parent.order;
        st.order.push_back(f);
        st.has_order = true;
        std::set_intersection(parent.coverage_idx.begin(), parent.coverage_idx.end(), single.coverage_idx.begin(),
                              single.coverage_idx.end(), std::back_inserter(st.coverage_idx));
        st.coverage = static_cast<double>(st.coverage_idx.size()) / n_cov_;
        for (int64_t r : parent.idx)
          if (data_[r * p_ + f]) st.idx.push_back(r), st.positives += labels_[r];
        st.nsamples = static_cast<double>(st.idx.size());
        state_[nt] = std::move(st);
      }
    return out;
  }

  // KL-LUCB: indices of the top_n anchors by precision, to within epsilon.
  std::vector<int64_t> kllucb(const std::vector<Anchor>& anchors, double epsilon, double delta, int64_t batch,
                              int64_t top_n) {
    const int64_t n = static_cast<int64_t>(anchors.size());
    std::vector<double> ns(n), positives(n);
    std::vector<Anchor> unsampled;
    std::vector<int64_t> unsampled_idx;
    for (int64_t i = 0; i < n; ++i) {
      ns[i] = state_[anchors[i]].nsamples;
      positives[i] = state_[anchors[i]].positives;
      if (ns[i] == 0) unsampled.push_back(anchors[i]), unsampled_idx.push_back(i);
    }
    if (!unsampled.empty()) {
      auto [p, t] = draw_samples(unsampled, 1);
      for (size_t k = 0; k < unsampled_idx.size(); ++k) positives[unsampled_idx[k]] += p[k], ns[unsampled_idx[k]] += t[k];
    }
    std::vector<int64_t> all(n);
    std::iota(all.begin(), all.end(), 0);
    if (n == top_n) return all;
    std::vector<double> means(n), ub(n, 0.0), lb(n, 0.0);
    for (int64_t i = 0; i < n; ++i) means[i] = positives[i] / ns[i];
    auto sorted_by_mean = [&] {
      std::vector<int64_t> order = all;
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return means[a] < means[b]; });
      return order;
    };
    int64_t t = 1;
    auto critical = [&](int64_t& ut, int64_t& lt) {
      const std::vector<int64_t> order = sorted_by_mean();
      const double beta = compute_beta(n, t, delta);
      ut = -1, lt = -1;
      for (int64_t k = 0; k < n - top_n; ++k) {  // not J: update the upper bounds
        const int64_t i = order[k];
        ub[i] = detail::kl_upper_bound(means[i], beta / ns[i]);
        if (ut < 0 || ub[i] > ub[ut]) ut = i;
      }
      for (int64_t k = n - top_n; k < n; ++k) {  // J: the lower bounds
        const int64_t i = order[k];
        lb[i] = detail::kl_lower_bound(means[i], beta / ns[i]);
        if (lt < 0 || lb[i] < lb[lt]) lt = i;
      }
    };
    int64_t ut, lt;
    critical(ut, lt);
    while (ub[ut] - lb[lt] > epsilon) {
      auto [p, tot] = draw_samples({anchors[ut], anchors[lt]}, batch);
      positives[ut] += p[0], ns[ut] += tot[0];
      positives[lt] += p[1], ns[lt] += tot[1];
      means[ut] = positives[ut] / ns[ut];
      means[lt] = positives[lt] / ns[lt];
      t += 1;
      critical(ut, lt);
    }
    const std::vector<int64_t> order = sorted_by_mean();
    return std::vector<int64_t>(order.end() - top_n, order.end());
  }

  // AnchorBaseBeam.get_anchor_metadata: precision and coverage of each partial anchor.
  nlohmann::json metadata(const Anchor& best, bool success) {
    nlohmann::json partial = nlohmann::json::array();
    partial_precisions_.clear();
    Anchor current;
    for (int64_t f : state_[best].order) {
      current.insert(std::upper_bound(current.begin(), current.end(), f), f);
      ArmState& st = state_[current];
      const double mean = st.positives / st.nsamples;
      if (!st.sampled) draw_samples({current}, o_.batch_size);  // examples and coverage of a partial anchor
      partial.push_back({{"predicate", f}, {"precision", mean}, {"coverage", state_[current].coverage}});
      partial_precisions_.push_back(mean);
    }
    nlohmann::json out = {{"success", success}, {"partial", partial}};
    if (best.empty()) {
      out["precision"] = empty_precision_;
      out["coverage"] = 1.0;
    } else {
      out["precision"] = partial.back()["precision"];
      out["coverage"] = partial.back()["coverage"];
    }
    return out;
  }

 public:
  const ArmState& state(const Anchor& a) { return state_[a]; }

 private:
  const Sampler& s_;
  Labeler labeler_;
  const AnchorsOptions& o_;
  std::mt19937_64& rng_;
  int64_t p_;
  std::vector<uint8_t> data_, labels_, coverage_;
  int64_t n_cov_ = 0;
  std::map<Anchor, ArmState> state_;
  int64_t calls_ = 0;
  double empty_precision_ = 0;
  std::vector<double> partial_precisions_;
};

std::string fmt2(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// The random stream of one instance, from its values (batch-invariant, as lime's).
uint64_t content_stream(const at::Tensor& row, uint64_t seed) {
  const at::Tensor r = row.to(at::kDouble).contiguous();
  const auto* p = reinterpret_cast<const unsigned char*>(r.data_ptr<double>());
  uint64_t h = 1469598103934665603ull ^ (seed * 0x9E3779B97F4A7C15ull);
  for (int64_t k = 0; k < r.numel() * static_cast<int64_t>(sizeof(double)); ++k) h = (h ^ p[k]) * 1099511628211ull;
  return h;
}

std::string resolve_mode(const std::string& mode, const at::Tensor& x, const InputSpec& spec) {
  if (mode != "auto") return mode;
  if (spec.layout == "NC") return "tabular";
  if (spec.layout == "NCHW" || spec.layout == "NHWC") return "image";
  if (x.dim() == 2) return "tabular";
  if (x.dim() == 4) return "image";
  throw InvalidArgument(str_cat("anchors: cannot tell how to perturb inputs of shape ", detail::shape_str(x.sizes()),
                                " with input layout '", spec.layout, "'; set the layout (NC tabular, NCHW/NHWC "
                                "image) or the option mode=tabular|image."));
}

}  // namespace

void Anchors::Options::validate() const {
  CANDELA_CHECK(mode == "auto" || mode == "tabular" || mode == "image", "anchors: unknown mode '", mode, "'.",
                did_you_mean(mode, {"auto", "tabular", "image"}));
  CANDELA_CHECK(threshold > 0 && threshold <= 1, "anchors: threshold must be in (0, 1], got ", threshold,
                "; alibi's default is 0.95.");
  CANDELA_CHECK(delta > 0 && delta < 1, "anchors: delta must be in (0, 1), got ", delta, "; alibi's default is 0.1.");
  CANDELA_CHECK(tau > 0 && tau < 1, "anchors: tau must be in (0, 1), got ", tau, "; alibi's default is 0.15.");
  CANDELA_CHECK(batch_size >= 1 && batch_size <= 1000000, "anchors: batch_size must be in [1, 1000000], got ",
                batch_size, ".");
  CANDELA_CHECK(coverage_samples >= 1 && coverage_samples <= 10000000, "anchors: coverage_samples must be in [1, ",
                "10000000], got ", coverage_samples, ".");
  CANDELA_CHECK(beam_size >= 1, "anchors: beam_size must be at least 1, got ", beam_size, ".");
  CANDELA_CHECK(max_anchor_size >= 0, "anchors: max_anchor_size must be >= 0 (0: no limit), got ", max_anchor_size,
                ".");
  CANDELA_CHECK(min_samples_start >= 1, "anchors: min_samples_start must be at least 1, got ", min_samples_start, ".");
  CANDELA_CHECK(n_covered_ex >= 0, "anchors: n_covered_ex must be >= 0, got ", n_covered_ex, ".");
  CANDELA_CHECK(!disc_perc.empty(), "anchors: disc_perc needs at least one percentile, e.g. 25,50,75.");
  for (double q : disc_perc)
    CANDELA_CHECK(q >= 0 && q <= 100, "anchors: disc_perc values are percentiles in [0, 100], got ", q, ".");
  CANDELA_CHECK(p_sample >= 0 && p_sample < 1, "anchors: p_sample must be in [0, 1), got ", p_sample, ".");
  for (double c : hide_color)
    CANDELA_CHECK(std::isfinite(c), "anchors: hide_color values must be finite numbers, got ", c, ".");
}

Attribution Anchors::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const Options& o = options_;
  const at::Tensor& x = req.inputs;
  const InputSpec& spec = ev.model().input_spec();
  const std::string mode = resolve_mode(o.mode, x, spec);
  const int64_t n = x.size(0), per = x.numel() / n;
  std::vector<int64_t> batch_shape(x.sizes().begin(), x.sizes().end());
  batch_shape[0] = -1;
  const at::Tensor xf = x.reshape({n, per}).to(at::kDouble).cpu();

  at::Tensor train, masks;
  if (mode == "tabular") {
    CANDELA_CHECK(x.dim() == 2, "anchors: tabular mode explains 2-d inputs [N, columns], got shape ",
                  detail::shape_str(x.sizes()), "; use mode=image, or flatten the rows.");
    CANDELA_CHECK(!req.feature_mask.defined(), "anchors: tabular mode makes predicates per column; a feature_mask ",
                  "(--features) is not supported here. Drop it.");
    CANDELA_CHECK(req.baseline.is_distribution(), "anchors: tabular mode draws perturbations from the training rows "
                  "(and cuts columns at their quartiles), so the baseline must be a distribution of training rows: "
                  "pass --background train.csv (or --baseline dist:train.npy); got baseline '",
                  req.baseline.describe(), "'.");
    train = req.baseline.samples(x, spec.layout, 0);
    CANDELA_CHECK(train.size(0) >= 1, "anchors: the training-row distribution is empty.");
    train = train.reshape({train.size(0), per});
  } else {
    CANDELA_CHECK(x.dim() == 4 || x.dim() == 3, "anchors: image mode explains images [N, C, H, W], got shape ",
                  detail::shape_str(x.sizes()), ".");
    CANDELA_CHECK(req.feature_mask.defined(), "anchors: image mode builds anchors from superpixels and needs them "
                  "as a feature mask: pass --features slic:20 (or felzenszwalb:100, grid:16, or an .npy of segment "
                  "ids).");
    masks = expand_feature_mask(req.feature_mask, x, spec).reshape({n, per}).cpu();
  }

  std::vector<at::Tensor> outs;
  ev.forward("anchors: instances", n,
             [&](int64_t b, int64_t e) { return Rows{x.slice(0, b, e), at::arange(b, e, kL), {}}; },
             [&](int64_t, int64_t, const Rows&, const at::Tensor& out) { outs.push_back(out.detach()); });
  const at::Tensor out_x = at::cat(outs);
  CANDELA_CHECK(out_x.dim() == 2 && out_x.size(1) >= 2, "anchors explains a classifier's [N, classes] output; the "
                "model returns shape ", detail::shape_str(out_x.sizes()), ".");
  const std::vector<int64_t> classes = req.target.classes(out_x);
  CANDELA_CHECK(static_cast<int64_t>(classes.size()) == n, "anchors explains a class per sample; the target '",
                req.target.describe(), "' is not a class.");
  for (int64_t c : classes)
    CANDELA_CHECK(c >= 0 && c < out_x.size(1), "anchors: target class ", c, " is out of range for a model with ",
                  out_x.size(1), " classes.");

  const std::vector<std::string> model_names = ev.model().feature_names();
  auto name_of = [&](int64_t j) {
    return static_cast<int64_t>(model_names.size()) == per ? model_names[j] : str_cat("f", j);
  };

  at::Tensor values = at::zeros({n, per}, kD);
  nlohmann::json anchors = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor xi = xf[i].contiguous();
    std::mt19937_64 rng(content_stream(xi, static_cast<uint64_t>(o.seed)));
    const int64_t cls = classes[i];
    auto labeler = [&](const at::Tensor& rows) {
      std::vector<uint8_t> labels;
      labels.reserve(rows.size(0));
      ev.forward("anchors", rows.size(0),
                 [&](int64_t b, int64_t e) {
                   return Rows{rows.slice(0, b, e).reshape(batch_shape).to(x.options()), at::full({e - b}, i, kL), {}};
                 },
                 [&](int64_t, int64_t, const Rows&, const at::Tensor& out) {
                   const at::Tensor top = out.argmax(1).cpu();
                   for (int64_t r = 0; r < top.size(0); ++r) labels.push_back(top[r].item<int64_t>() == cls);
                 });
      return labels;
    };
    std::unique_ptr<Sampler> sampler;
    at::Tensor fidx;
    int64_t g = 0;
    if (mode == "tabular") {
      sampler = std::make_unique<TabularSampler>(train, o.disc_perc, xi);
    } else {
      // Segment ids renumbered 0..G-1 over the segments present; elements outside stay shown.
      const at::Tensor ids = std::get<0>(at::_unique(masks[i], /*sorted=*/true));
      g = ids.numel();
      fidx = at::searchsorted(ids, masks[i]);
      // alibi's fudged image: each segment's per-channel mean, or hide_color.
      const ImageAxes axes = image_axes(x, spec);
      const int64_t channels = axes.c >= 0 ? x.size(axes.c) : 1;
      at::Tensor channel = at::zeros({per}, kL);
      const std::vector<int64_t> sample_shape(x.sizes().begin() + 1, x.sizes().end());
      if (axes.c >= 0) {
        std::vector<int64_t> shape(sample_shape.size(), 1);
        shape[axes.c - 1] = channels;
        channel = at::arange(channels, kL).view(shape).expand(sample_shape).reshape({per});
      }
      at::Tensor hidden;
      if (o.hide_color.empty()) {
        const at::Tensor key = fidx * channels + channel;
        const at::Tensor sums = at::zeros({g * channels}, kD).index_add_(0, key, xi);
        const at::Tensor cnt = at::zeros({g * channels}, kD).index_add_(0, key, at::ones_like(xi));
        hidden = (sums / cnt.clamp_min(1)).index_select(0, key);
      } else {
        CANDELA_CHECK(o.hide_color.size() == 1 || static_cast<int64_t>(o.hide_color.size()) == channels,
                      "anchors: hide_color needs one value or one per channel (", channels, "), got ",
                      o.hide_color.size(), ".");
        hidden = o.hide_color.size() == 1 ? at::full({per}, o.hide_color[0], kD)
                                          : at::tensor(o.hide_color, kD).index_select(0, channel);
      }
      sampler = std::make_unique<ImageSampler>(xi, hidden, fidx, g, o.p_sample);
    }

    AnchorSearch search(*sampler, labeler, o, rng);
    std::vector<int64_t> order;
    std::vector<double> precisions;
    nlohmann::json meta = search.run(order, precisions);

    // Values: the precision each predicate adds, on its column or segment.
    double previous = search.empty_precision();
    std::vector<double> gain(mode == "tabular" ? per : g, 0.0);
    for (size_t k = 0; k < order.size(); ++k) {
      const int64_t unit =
          mode == "tabular" ? static_cast<const TabularSampler&>(*sampler).predicate(order[k]).feature : order[k];
      gain[unit] += precisions[k] - previous;
      previous = precisions[k];
    }
    const at::Tensor gains = at::tensor(gain, kD);
    values[i] = mode == "tabular" ? gains : at::cat({gains, at::zeros({1}, kD)}).index_select(0, fidx);

    // The rule as readable predicates.
    nlohmann::json conditions = nlohmann::json::array(), names = nlohmann::json::array();
    std::string rule;
    if (mode == "tabular") {
      const auto& ts = static_cast<const TabularSampler&>(*sampler);
      std::vector<int64_t> cols;
      std::map<int64_t, std::pair<double, double>> range;
      for (int64_t p : order) {
        const Predicate& pr = ts.predicate(p);
        names.push_back(pr.greater ? name_of(pr.feature) + " > " + fmt2(ts.border(pr.feature, pr.border))
                                   : name_of(pr.feature) + " <= " + fmt2(ts.border(pr.feature, pr.border)));
        if (!range.count(pr.feature)) cols.push_back(pr.feature), range[pr.feature] = {-INFINITY, INFINITY};
        auto& [lo, hi] = range[pr.feature];
        if (pr.greater) lo = std::max(lo, ts.border(pr.feature, pr.border));
        else hi = std::min(hi, ts.border(pr.feature, pr.border));
      }
      for (int64_t j : cols) {
        const auto [lo, hi] = range[j];
        const std::string text = std::isfinite(lo) && std::isfinite(hi) ? fmt2(lo) + " < " + name_of(j) + " <= " + fmt2(hi)
                                 : std::isfinite(lo)                    ? name_of(j) + " > " + fmt2(lo)
                                                                        : name_of(j) + " <= " + fmt2(hi);
        nlohmann::json c = {{"feature", name_of(j)}, {"index", j}, {"text", text}};
        c["lower"] = std::isfinite(lo) ? nlohmann::json(lo) : nlohmann::json(nullptr);  // exclusive
        c["upper"] = std::isfinite(hi) ? nlohmann::json(hi) : nlohmann::json(nullptr);  // inclusive
        conditions.push_back(c);
        rule += (rule.empty() ? "" : " AND ") + text;
      }
    } else {
      for (int64_t p : order) {
        names.push_back(str_cat("segment ", p));
        conditions.push_back({{"segment", p}, {"text", str_cat("segment ", p, " shown")}});
        rule += (rule.empty() ? "" : " AND ") + str_cat("segment ", p);
      }
    }
    for (size_t k = 0; k < meta["partial"].size(); ++k) meta["partial"][k]["predicate"] = names[k];
    meta["rule"] = rule.empty() ? "(empty anchor: the class holds everywhere)" : rule;
    meta["conditions"] = conditions;
    meta["names"] = names;
    meta["class"] = cls;
    meta["model_calls"] = search.model_calls();
    meta["empty_anchor_precision"] = search.empty_precision();
    if (mode == "tabular") {
      Anchor sorted = order;
      std::sort(sorted.begin(), sorted.end());
      const ArmState& st = search.state(sorted);
      if (st.covered_true.defined()) {
        meta["examples"] = {{"covered_true", detail::tensor_to_json(st.covered_true)},
                            {"covered_false", detail::tensor_to_json(st.covered_false)}};
      }
    } else {
      meta["segments"] = g;
    }
    anchors.push_back(meta);
  }

  Attribution a;
  a.values = values.view(x.sizes()).to(x.options());
  a.output = out_x;
  a.targets = classes;
  a.extra = {{"mode", mode}, {"anchors", anchors}};
  std::vector<int64_t> failed;
  for (int64_t i = 0; i < n; ++i)
    if (!anchors[i]["success"].get<bool>()) failed.push_back(i);
  if (!failed.empty())
    a.warn("anchor_below_threshold",
           str_cat("no anchor reached precision ", o.threshold, " for ", failed.size(), " of ", n,
                   " sample(s); the best candidate is reported instead. Lower threshold, or use finer bins "
                   "(disc_perc) or smaller segments."),
           {{"samples", failed}, {"threshold", o.threshold}});
  return a;
}

}  // namespace candela
