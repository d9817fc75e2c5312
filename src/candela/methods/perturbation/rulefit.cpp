#include "candela/methods/perturbation/rulefit.h"
#include "candela/methods/perturbation/global_util.h"

#include <ATen/ATen.h>
#include <opencv2/ml.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <unordered_map>

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"

namespace candela {

namespace {

using detail::str_cat;
const auto kF64 = at::TensorOptions().dtype(at::kDouble);

std::string fmt4(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Cyclic coordinate descent on the centred problem, with the Gram matrix g = Zc'Zc / N and
// c = Zc'yc / N: a_j <- S(c_j - sum_{k != j} g_jk a_k, alpha) / g_jj, keeping q = g a up to date.
// glmnet's active-set iteration: a sweep over every coordinate, then sweeps over the non-zero ones
// until they settle, then a full sweep again; done when a full sweep moves no coefficient's
// contribution |d a_j| sqrt(g_jj) by more than tol.
void coordinate_descent(const double* g, const double* c, int64_t k, double alpha, double* a, double* q, double tol,
                        int64_t max_iter) {
  auto update = [&](int64_t j) {
    const double gjj = g[j * k + j];
    if (gjj <= 0) return 0.0;
    const double rho = c[j] - q[j] + gjj * a[j];
    const double updated = rho > alpha ? (rho - alpha) / gjj : rho < -alpha ? (rho + alpha) / gjj : 0.0;
    const double d = updated - a[j];
    if (d == 0) return 0.0;
    a[j] = updated;
    const double* col = g + j * k;  // g is symmetric: row j is column j
    for (int64_t i = 0; i < k; ++i) q[i] += col[i] * d;
    return std::abs(d) * std::sqrt(gjj);
  };
  std::vector<int64_t> active;
  for (int64_t it = 0; it < max_iter; ++it) {
    double moved = 0;
    for (int64_t j = 0; j < k; ++j) moved = std::max(moved, update(j));
    if (moved <= tol) return;
    active.clear();
    for (int64_t j = 0; j < k; ++j)
      if (a[j] != 0) active.push_back(j);
    for (int64_t inner = 0; inner < max_iter; ++inner) {
      double m = 0;
      for (int64_t j : active) m = std::max(m, update(j));
      if (m <= tol) break;
    }
  }
}

// Gram matrix and correlation of the centred problem over rows with cross-products zz = Z'Z,
// zy = Z'y, column sums sz, sum sy, count n.
struct Centred {
  at::Tensor g, c, mean_z;
  double mean_y = 0;
};
Centred centre(const at::Tensor& zz, const at::Tensor& zy, const at::Tensor& sz, double sy, int64_t n) {
  Centred out;
  out.mean_z = sz / n;
  out.mean_y = sy / n;
  out.g = ((zz - n * at::outer(out.mean_z, out.mean_z)) / n).contiguous();
  out.c = ((zy - n * out.mean_z * out.mean_y) / n).contiguous();
  return out;
}

// A rule: conditions merged per column into an interval lo < x <= hi (float thresholds, as the
// tree compares).
struct Rule {
  std::map<int64_t, std::pair<float, float>> bounds;
  std::vector<int64_t> order;  // columns in the order they were first split on
};

}  // namespace

namespace detail {

std::pair<at::Tensor, double> lasso_fit(const at::Tensor& z, const at::Tensor& y, double alpha, double tol,
                                        int64_t max_iter) {
  const at::Tensor zd = z.to(at::kDouble).contiguous(), yd = y.to(at::kDouble).contiguous();
  const int64_t n = zd.size(0), k = zd.size(1);
  const Centred cen = centre(zd.t().matmul(zd), zd.t().matmul(yd), zd.sum(0), yd.sum().item<double>(), n);
  at::Tensor a = at::zeros({k}, kF64), q = at::zeros({k}, kF64);
  const double scale = std::max(yd.std(/*unbiased=*/false).item<double>(), 1e-300);
  coordinate_descent(cen.g.data_ptr<double>(), cen.c.data_ptr<double>(), k, alpha, a.data_ptr<double>(),
                     q.data_ptr<double>(), tol * scale, max_iter);
  return {a, cen.mean_y - (cen.mean_z * a).sum().item<double>()};
}

}  // namespace detail

void RuleFit::Options::validate() const {
  CANDELA_CHECK(tree_size >= 2 && tree_size <= 64, "rulefit: tree_size (mean terminal nodes) must be in [2, 64], "
                "got ", tree_size, "; Friedman's default is 4.");
  CANDELA_CHECK(max_rules >= 1, "rulefit: max_rules must be at least 1, got ", max_rules, ".");
  CANDELA_CHECK(n_estimators >= 0 && n_estimators <= 100000, "rulefit: n_estimators must be in [0, 100000] (0: from "
                "max_rules), got ", n_estimators, ".");
  CANDELA_CHECK(learning_rate > 0 && learning_rate <= 1, "rulefit: learning_rate must be in (0, 1], got ",
                learning_rate, ".");
  CANDELA_CHECK(winsorize >= 0 && winsorize < 0.5, "rulefit: winsorize must be in [0, 0.5), got ", winsorize, ".");
  CANDELA_CHECK(std::isfinite(alpha) && alpha >= 0, "rulefit: alpha must be >= 0 (0: cross-validated), got ", alpha,
                ".");
  CANDELA_CHECK(cv >= 2, "rulefit: cv needs at least 2 folds, got ", cv, ".");
  CANDELA_CHECK(n_alphas >= 1 && n_alphas <= 10000, "rulefit: n_alphas must be in [1, 10000], got ", n_alphas, ".");
  CANDELA_CHECK(class_index >= -1, "rulefit: class_index must be a class or -1 (automatic), got ", class_index, ".");
}

Attribution RuleFit::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const Options& o = options_;
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0), per = x.numel() / n;
  CANDELA_CHECK(n < (int64_t{1} << 31) && per < (int64_t{1} << 31), "rulefit: too many rows or features for "
                "OpenCV's trees.");
  const std::vector<std::string> names = detail::global_feature_names(o.feature_names, ev.model(), per, "rulefit");

  const at::Tensor out = detail::global_model_outputs(ev, x, "rulefit");
  const bool classification = out.dim() == 2 && out.size(1) > 1;
  int64_t cls = -1;
  at::Tensor y;
  if (classification) {
    const int64_t c = out.size(1);
    cls = o.class_index;
    if (cls < 0) cls = c == 2 ? 1 : at::bincount(out.argmax(1).cpu(), {}, c).argmax().item<int64_t>();
    CANDELA_CHECK(cls < c, "rulefit: class_index ", cls, " is out of range for a model with ", c, " classes.");
    const at::Tensor p = ev.model().output_kind() == "probabilities" ? out.to(at::kDouble) : at::softmax(out.to(at::kDouble), 1);
    y = p.select(1, cls).cpu().contiguous();
  } else {
    y = out.reshape({n}).to(at::kDouble).cpu().contiguous();
  }
  CANDELA_CHECK(at::isfinite(y).all().item<bool>(), "rulefit: the model's output has non-finite values.");

  const at::Tensor xs = x.reshape({n, per}).to(at::kFloat).cpu().contiguous();
  const float* xp = xs.data_ptr<float>();
  const double* yp = y.data_ptr<double>();
  std::mt19937_64 rng(static_cast<uint64_t>(o.seed) * 0x9E3779B97F4A7C15ull + 0x5EEDull);
  auto uniform01 = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };

  // ---- the ISLE tree ensemble, every node but the root a rule ----
  std::vector<Rule> rules;
  std::map<std::map<int64_t, std::pair<float, float>>, size_t> seen;
  const int64_t n_trees = o.n_estimators > 0 ? o.n_estimators
                                             : (o.max_rules + 2 * (o.tree_size - 1) - 1) / (2 * (o.tree_size - 1));
  const int64_t eta = std::max<int64_t>(2, std::min<int64_t>(n / 2, 100 + static_cast<int64_t>(6 * std::sqrt(n))));
  const bool constant = y.max().item<double>() - y.min().item<double>() <= 1e-12 * (1 + y.abs().max().item<double>());
  std::vector<double> f(n, y.mean().item<double>());
  std::vector<int64_t> rows(n);
  std::iota(rows.begin(), rows.end(), 0);
  int64_t trees_fitted = 0;
  for (int64_t m = 0; m < n_trees && !constant && n >= 4; ++m) {
    if (ev.options().cancel.cancelled()) throw Cancelled("the explanation was cancelled.");
    // Subsample without replacement (a partial Fisher-Yates shuffle).
    for (int64_t i = 0; i < eta; ++i) std::swap(rows[i], rows[i + static_cast<int64_t>(uniform01() * (n - i)) % (n - i)]);
    const double gamma = -std::log(1.0 - uniform01()) * static_cast<double>(o.tree_size - 2);
    const int64_t leaves = 2 + static_cast<int64_t>(std::floor(gamma));
    const int depth = static_cast<int>(std::min<int64_t>(12, std::max<int64_t>(1, static_cast<int64_t>(
                                                                                      std::ceil(std::log2(leaves))))));
    cv::Mat samples(static_cast<int>(eta), static_cast<int>(per), CV_32F), responses(static_cast<int>(eta), 1, CV_32F);
    double rmin = INFINITY, rmax = -INFINITY;
    for (int64_t i = 0; i < eta; ++i) {
      const int64_t r = rows[i];
      std::copy(xp + r * per, xp + r * per + per, samples.ptr<float>(static_cast<int>(i)));
      const double res = yp[r] - f[r];
      responses.at<float>(static_cast<int>(i), 0) = static_cast<float>(res);
      rmin = std::min(rmin, res), rmax = std::max(rmax, res);
    }
    if (!(rmax - rmin > 1e-12)) continue;
    cv::Ptr<cv::ml::DTrees> tree = cv::ml::DTrees::create();
    tree->setMaxDepth(depth);
    tree->setMinSampleCount(5);
    tree->setCVFolds(0);
    tree->setUseSurrogates(false);
    tree->setUse1SERule(false);
    tree->setTruncatePrunedTree(false);
    tree->setRegressionAccuracy(static_cast<float>(1e-6 * (rmax - rmin)) + 1e-30f);
    cv::Mat var_type(1, static_cast<int>(per + 1), CV_8U, cv::Scalar(cv::ml::VAR_ORDERED));
    try {
      tree->train(cv::ml::TrainData::create(samples, cv::ml::ROW_SAMPLE, responses, cv::noArray(), cv::noArray(),
                                            cv::noArray(), var_type));
    } catch (const cv::Exception& e) {
      throw InvalidArgument(str_cat("rulefit: OpenCV could not fit a tree: ", e.what()));
    }
    trees_fitted += 1;
    const auto& nodes = tree->getNodes();
    const auto& splits = tree->getSplits();
    if (tree->getRoots().empty()) continue;
    const int root = tree->getRoots()[0];
    // Rules: the path to every node but the root.
    std::vector<std::tuple<int64_t, bool, float>> path;
    std::function<void(int)> walk = [&](int k) {
      if (!path.empty()) {
        Rule rule;
        for (const auto& [feat, greater, c] : path) {
          auto it = rule.bounds.find(feat);
          if (it == rule.bounds.end()) {
            rule.order.push_back(feat);
            it = rule.bounds.emplace(feat, std::make_pair(-INFINITY, INFINITY)).first;
          }
          if (greater) it->second.first = std::max(it->second.first, c);
          else it->second.second = std::min(it->second.second, c);
        }
        if (!seen.count(rule.bounds)) {
          seen[rule.bounds] = rules.size();
          rules.push_back(std::move(rule));
        }
      }
      if (nodes[k].split < 0) return;
      const auto& sp = splits[nodes[k].split];
      path.emplace_back(sp.varIdx, false, sp.c);
      walk(nodes[k].left);
      std::get<1>(path.back()) = true;
      walk(nodes[k].right);
      path.pop_back();
    };
    walk(root);
    // Boost: F += learning_rate * tree(x) on every row.
    for (int64_t r = 0; r < n; ++r) {
      int k = root;
      while (nodes[k].split >= 0) {
        const auto& sp = splits[nodes[k].split];
        k = xp[r * per + sp.varIdx] <= sp.c ? nodes[k].left : nodes[k].right;
      }
      f[r] += o.learning_rate * nodes[k].value;
    }
  }

  // ---- the rule columns: support in (0, 1), one rule per distinct column ----
  auto holds = [&](const Rule& rule, int64_t r) {
    for (const auto& [feat, b] : rule.bounds) {
      const float v = xp[r * per + feat];
      if (!(v > b.first && v <= b.second)) return false;
    }
    return true;
  };
  std::vector<size_t> kept;
  std::vector<std::vector<uint8_t>> columns;
  std::unordered_map<std::string, size_t> by_column;  // column bytes -> index in kept
  for (size_t k = 0; k < rules.size() && static_cast<int64_t>(kept.size()) < o.max_rules; ++k) {
    std::string col(n, '\0');
    int64_t count = 0;
    for (int64_t r = 0; r < n; ++r) count += col[r] = holds(rules[k], r);
    if (count == 0 || count == n) continue;
    auto it = by_column.find(col);
    if (it != by_column.end()) {
      if (rules[k].bounds.size() < rules[kept[it->second]].bounds.size()) kept[it->second] = k;
      continue;
    }
    by_column[col] = kept.size();
    kept.push_back(k);
    columns.emplace_back(col.begin(), col.end());
  }
  const int64_t n_rules = static_cast<int64_t>(kept.size());

  // ---- linear terms, winsorised and scaled to 0.4 / std ----
  struct Linear {
    int64_t feature;
    double lo, hi, std;
  };
  std::vector<Linear> linear;
  const at::Tensor xd = xs.to(at::kDouble);
  if (o.include_linear) {
    const at::Tensor qs = at::tensor({o.winsorize, 1.0 - o.winsorize}, kF64);
    for (int64_t j = 0; j < per; ++j) {
      const at::Tensor col = xd.select(1, j).contiguous();
      const at::Tensor q = at::quantile(col, qs);
      const double lo = q[0].item<double>(), hi = q[1].item<double>();
      const double sd = col.clamp(lo, hi).std(/*unbiased=*/false).item<double>();
      if (sd > 0) linear.push_back({j, lo, hi, sd});
    }
  }
  const int64_t k_all = n_rules + static_cast<int64_t>(linear.size());
  at::Tensor z = at::zeros({n, k_all}, kF64);
  {
    double* zp = z.data_ptr<double>();
    for (int64_t c = 0; c < n_rules; ++c)
      for (int64_t r = 0; r < n; ++r) zp[r * k_all + c] = columns[c][r];
    for (size_t l = 0; l < linear.size(); ++l) {
      const Linear& t = linear[l];
      for (int64_t r = 0; r < n; ++r)
        zp[r * k_all + n_rules + static_cast<int64_t>(l)] =
            0.4 * std::clamp(static_cast<double>(xp[r * per + t.feature]), t.lo, t.hi) / t.std;
    }
  }

  // ---- the lasso: alpha fixed, or LassoCV's path and folds ----
  at::Tensor coef = at::zeros({k_all}, kF64);
  double intercept = y.mean().item<double>(), alpha = o.alpha;
  nlohmann::json cv_report = nullptr;
  const double scale = std::max(y.std(/*unbiased=*/false).item<double>(), 1e-300);
  const double tol = 1e-4 * scale;  // on the fitted values' scale, as sklearn's tol = 1e-4
  if (k_all > 0 && !constant) {
    const at::Tensor zz = z.t().matmul(z), zy = z.t().matmul(y), sz = z.sum(0);
    const double sy = y.sum().item<double>();
    const Centred full = centre(zz, zy, sz, sy, n);
    if (alpha == 0) {
      const double alpha_max = std::max(full.c.abs().max().item<double>(), 1e-300);
      std::vector<double> path(o.n_alphas);
      for (int64_t i = 0; i < o.n_alphas; ++i)
        path[i] = o.n_alphas == 1 ? alpha_max : alpha_max * std::pow(1e-3, static_cast<double>(i) / (o.n_alphas - 1));
      const int64_t folds = std::min<int64_t>(o.cv, n);
      std::vector<int64_t> perm(n);
      std::iota(perm.begin(), perm.end(), 0);
      for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[static_cast<int64_t>(uniform01() * (i + 1)) % (i + 1)]);
      std::vector<double> mse(path.size(), 0.0);
      for (int64_t fold = 0; fold < folds; ++fold) {
        if (ev.options().cancel.cancelled()) throw Cancelled("the explanation was cancelled.");
        std::vector<int64_t> test;
        for (int64_t i = fold; i < n; i += folds) test.push_back(perm[i]);
        const at::Tensor ti = at::tensor(test, at::TensorOptions().dtype(at::kLong));
        const at::Tensor zt = z.index_select(0, ti), yt = y.index_select(0, ti);
        const int64_t n_train = n - static_cast<int64_t>(test.size());
        const Centred tr = centre(zz - zt.t().matmul(zt), zy - zt.t().matmul(yt), sz - zt.sum(0),
                                  sy - yt.sum().item<double>(), n_train);
        at::Tensor a = at::zeros({k_all}, kF64), q = at::zeros({k_all}, kF64);
        for (size_t p = 0; p < path.size(); ++p) {
          coordinate_descent(tr.g.data_ptr<double>(), tr.c.data_ptr<double>(), k_all, path[p], a.data_ptr<double>(),
                             q.data_ptr<double>(), tol, 1000);
          const at::Tensor pred = (zt - tr.mean_z).matmul(a) + tr.mean_y;
          mse[p] += (pred - yt).pow(2).sum().item<double>() / n;
        }
      }
      const size_t best = std::min_element(mse.begin(), mse.end()) - mse.begin();
      alpha = path[best];
      cv_report = {{"folds", folds}, {"alphas", path.size()}, {"alpha_max", alpha_max}, {"mse", mse[best]}};
      // The final fit walks the same path on every row, warm-started, down to the chosen alpha.
      at::Tensor q = at::zeros({k_all}, kF64);
      for (size_t p = 0; p <= best; ++p)
        coordinate_descent(full.g.data_ptr<double>(), full.c.data_ptr<double>(), k_all, path[p],
                           coef.data_ptr<double>(), q.data_ptr<double>(), tol, 1000);
    } else {
      at::Tensor q = at::zeros({k_all}, kF64);
      coordinate_descent(full.g.data_ptr<double>(), full.c.data_ptr<double>(), k_all, alpha, coef.data_ptr<double>(),
                         q.data_ptr<double>(), tol, 1000);
    }
    intercept = full.mean_y - (full.mean_z * coef).sum().item<double>();
  }

  // ---- terms, importances, fidelity ----
  const double* cp = coef.data_ptr<double>();
  std::vector<double> feature_importance(per, 0.0);
  nlohmann::json terms = nlohmann::json::array();
  for (int64_t c = 0; c < n_rules; ++c) {
    if (cp[c] == 0) continue;
    const Rule& rule = rules[kept[c]];
    double s = 0;
    for (uint8_t v : columns[c]) s += v;
    s /= n;
    const double importance = std::abs(cp[c]) * std::sqrt(s * (1 - s));
    std::string text;
    nlohmann::json conditions = nlohmann::json::array();
    for (int64_t feat : rule.order) {
      const auto [lo, hi] = rule.bounds.at(feat);
      const std::string part = std::isfinite(lo) && std::isfinite(hi) ? fmt4(lo) + " < " + names[feat] + " <= " + fmt4(hi)
                               : std::isfinite(lo)                    ? names[feat] + " > " + fmt4(lo)
                                                                      : names[feat] + " <= " + fmt4(hi);
      text += (text.empty() ? "" : " and ") + part;
      nlohmann::json cond = {{"feature", names[feat]}, {"index", feat}};
      cond["lower"] = std::isfinite(lo) ? nlohmann::json(lo) : nlohmann::json(nullptr);  // exclusive
      cond["upper"] = std::isfinite(hi) ? nlohmann::json(hi) : nlohmann::json(nullptr);  // inclusive
      conditions.push_back(cond);
      feature_importance[feat] += importance / static_cast<double>(rule.bounds.size());
    }
    terms.push_back({{"type", "rule"}, {"rule", text}, {"conditions", conditions}, {"support", s},
                     {"coefficient", cp[c]}, {"importance", importance}});
  }
  for (size_t l = 0; l < linear.size(); ++l) {
    const double b = cp[n_rules + static_cast<int64_t>(l)];
    if (b == 0) continue;
    const Linear& t = linear[l];
    const double importance = std::abs(b) * 0.4;  // std of the scaled term
    feature_importance[t.feature] += importance;
    terms.push_back({{"type", "linear"},
                     {"rule", names[t.feature] + " (winsorised to [" + fmt4(t.lo) + ", " + fmt4(t.hi) + "])"},
                     {"feature", names[t.feature]}, {"index", t.feature}, {"lower", t.lo}, {"upper", t.hi},
                     {"support", 1.0},
                     {"coefficient", b * 0.4 / t.std},  // per unit of the winsorised feature
                     {"importance", importance}});
  }
  std::stable_sort(terms.begin(), terms.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    return a["importance"].get<double>() > b["importance"].get<double>();
  });

  const at::Tensor fit = z.matmul(coef) + intercept;
  const double sst = (y - y.mean()).pow(2).sum().item<double>(), sse = (fit - y).pow(2).sum().item<double>();
  const double r2 = sst > 0 ? 1.0 - sse / sst : (sse <= 1e-24 ? 1.0 : 0.0);
  nlohmann::json fidelity = {{"r2", r2}};
  if (classification) {
    const at::Tensor agree = (fit > 0.5).eq(out.argmax(1).cpu() == cls);
    fidelity["agreement"] = agree.to(at::kDouble).mean().item<double>();
  }

  const double total = std::accumulate(feature_importance.begin(), feature_importance.end(), 0.0);
  std::vector<double> shares(per, 0.0);
  nlohmann::json named = nlohmann::json::array();
  for (int64_t j = 0; j < per; ++j) {
    shares[j] = total > 0 ? feature_importance[j] / total : 0.0;
    if (feature_importance[j] > 0)
      named.push_back({{"feature", names[j]}, {"importance", feature_importance[j]}, {"share", shares[j]}});
  }
  std::stable_sort(named.begin(), named.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    return a["importance"].get<double>() > b["importance"].get<double>();
  });

  Attribution a;
  a.values = at::tensor(shares, kF64).to(x.scalar_type()).view(x.sizes().slice(1)).unsqueeze(0).expand(x.sizes())
                 .contiguous().to(x.device());
  a.output = out;
  a.extra = {{"terms", terms},
             {"intercept", intercept},
             {"alpha", alpha},
             {"cross_validation", cv_report},
             {"candidate_rules", n_rules},
             {"trees", trees_fitted},
             {"fidelity", fidelity},
             {"response", classification ? "probability of class " + std::to_string(cls) : std::string("output")},
             {"class_index", cls},
             {"feature_importance", named}};
  if (r2 < 0.5 && sst > 0)
    a.warn("poor_surrogate_fit",
           str_cat("RuleFit reproduces the model's ", classification ? "probability" : "output", " poorly (R^2 ", r2,
                   " on the rows, below 0.5): its rules do not describe what the model does. Give more rows, raise "
                   "tree_size or max_rules, or lower alpha."),
           {{"fidelity", r2}, {"metric", "r2"}, {"threshold", 0.5}});
  return a;
}

}  // namespace candela
