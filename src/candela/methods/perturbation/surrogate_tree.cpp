#include "candela/methods/perturbation/surrogate_tree.h"
#include "candela/methods/perturbation/global_util.h"

#include <ATen/ATen.h>
#include <opencv2/ml.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/detail/tensor_util.h"

namespace candela {
namespace {

using detail::str_cat;

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Per-node statistics of the rows that reach it: class counts, or sum and sum of squares.
struct NodeStats {
  int64_t count = 0;
  std::vector<int64_t> classes;
  double sum = 0, sum2 = 0;
  double impurity(bool classification) const {
    if (count == 0) return 0.0;
    if (classification) {
      double g = 1.0;
      for (int64_t c : classes) g -= (static_cast<double>(c) / count) * (static_cast<double>(c) / count);
      return g;
    }
    const double mean = sum / count;
    return std::max(sum2 / count - mean * mean, 0.0);
  }
};

}  // namespace

void SurrogateTree::Options::validate() const {
  CANDELA_CHECK(max_depth >= 1 && max_depth <= 25, "surrogate_tree: max_depth must be in [1, 25] (OpenCV's limit), "
                "got ", max_depth, ".");
  CANDELA_CHECK(min_samples_leaf >= 1, "surrogate_tree: min_samples_leaf must be at least 1, got ", min_samples_leaf,
                ".");
}

Attribution SurrogateTree::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0), per = x.numel() / n;
  CANDELA_CHECK(n < (int64_t{1} << 31) && per < (int64_t{1} << 31), "surrogate_tree: too many rows or features for "
                "OpenCV's tree.");

  const std::vector<std::string> names = detail::global_feature_names(options_.feature_names, ev.model(), per, "surrogate_tree");

  // The model's predictions over the rows.
  const at::Tensor out = detail::global_model_outputs(ev, x, "surrogate_tree");
  const bool classification = out.dim() == 2 && out.size(1) > 1;
  const int64_t num_classes = classification ? out.size(1) : 0;
  const at::Tensor model_pred = classification ? out.argmax(1).to(at::kInt).cpu().contiguous()
                                               : out.reshape({n}).to(at::kFloat).cpu().contiguous();

  at::Tensor xs = x.reshape({n, per}).to(at::kFloat).cpu().contiguous();
  const float* xp = xs.data_ptr<float>();
  auto label_of = [&](int64_t r) -> double {
    return classification ? model_pred.data_ptr<int>()[r] : model_pred.data_ptr<float>()[r];
  };

  // The tree as (value, split) nodes; node 0 is the root.
  struct TreeNode {
    double value = 0;
    int64_t feature = -1;  // -1: a leaf
    float threshold = 0;
    int left = -1, right = -1;
  };
  std::vector<TreeNode> nodes;
  const bool constant = at::equal(model_pred, model_pred[0].expand_as(model_pred));
  if (constant) {
    // One prediction everywhere (or one row): the tree is a single leaf; OpenCV refuses
    // a classification with one class.
    nodes.push_back({label_of(0)});
  } else {
    cv::Mat samples(static_cast<int>(n), static_cast<int>(per), CV_32F, xs.data_ptr<float>());
    cv::Mat responses(static_cast<int>(n), 1, classification ? CV_32S : CV_32F, model_pred.data_ptr());
    cv::Mat var_type(1, static_cast<int>(per + 1), CV_8U, cv::Scalar(cv::ml::VAR_ORDERED));
    var_type.at<uchar>(0, static_cast<int>(per)) = classification ? cv::ml::VAR_CATEGORICAL : cv::ml::VAR_ORDERED;
    cv::Ptr<cv::ml::DTrees> tree = cv::ml::DTrees::create();
    tree->setMaxDepth(static_cast<int>(options_.max_depth));
    tree->setMinSampleCount(static_cast<int>(options_.min_samples_leaf));
    tree->setCVFolds(0);
    tree->setUseSurrogates(false);
    tree->setUse1SERule(false);
    tree->setTruncatePrunedTree(false);
    // OpenCV stops splitting a regression node whose outputs' spread is below this; 0 would
    // split nodes that are already pure.
    if (!classification)
      tree->setRegressionAccuracy(static_cast<float>(1e-6 * model_pred.to(at::kDouble).std().item<double>()) + 1e-30f);
    try {
      tree->train(cv::ml::TrainData::create(samples, cv::ml::ROW_SAMPLE, responses, cv::noArray(), cv::noArray(),
                                            cv::noArray(), var_type));
    } catch (const cv::Exception& e) {
      throw InvalidArgument(str_cat("surrogate_tree: OpenCV could not fit the tree: ", e.what()));
    }
    const auto& cv_nodes = tree->getNodes();
    const auto& cv_splits = tree->getSplits();
    CANDELA_ASSERT(!tree->getRoots().empty(), "surrogate_tree: OpenCV returned an empty tree.");
    // Copy depth-first from the root, so that node 0 is the root.
    std::function<int(int)> copy = [&](int k) {
      const int id = static_cast<int>(nodes.size());
      nodes.push_back({cv_nodes[k].value});
      if (cv_nodes[k].split >= 0) {
        const auto& sp = cv_splits[cv_nodes[k].split];
        nodes[id].feature = sp.varIdx;
        nodes[id].threshold = sp.c;
        const int l = copy(cv_nodes[k].left);
        const int r = copy(cv_nodes[k].right);
        nodes[id].left = l;
        nodes[id].right = r;
      }
      return id;
    };
    copy(tree->getRoots()[0]);
  }

  // Route every row (OpenCV's rule for ordered variables: x <= c goes left), gathering each
  // node's statistics for the importances.
  std::vector<NodeStats> stats(nodes.size());
  for (auto& s : stats) s.classes.assign(num_classes, 0);
  std::vector<int> leaf_of(n);
  for (int64_t r = 0; r < n; ++r) {
    const double label = label_of(r);
    int node = 0;
    for (;;) {
      NodeStats& s = stats[node];
      s.count += 1;
      if (classification) s.classes[static_cast<int64_t>(label)] += 1;
      s.sum += label;
      s.sum2 += label * label;
      if (nodes[node].feature < 0) break;
      node = xp[r * per + nodes[node].feature] <= nodes[node].threshold ? nodes[node].left : nodes[node].right;
    }
    leaf_of[r] = node;
  }

  std::vector<double> importance(per, 0.0);
  double total = 0;
  for (size_t k = 0; k < nodes.size(); ++k) {
    const auto& nd = nodes[k];
    if (nd.feature < 0 || stats[k].count == 0) continue;
    const double dec = stats[k].count * stats[k].impurity(classification) -
                       stats[nd.left].count * stats[nd.left].impurity(classification) -
                       stats[nd.right].count * stats[nd.right].impurity(classification);
    importance[nd.feature] += dec;
    total += dec;
  }
  if (total > 0)
    for (double& v : importance) v /= total;

  const auto& class_names = ev.model().class_names();
  auto prediction_text = [&](double value) {
    if (!classification) return fmt(value);
    const auto c = static_cast<int64_t>(std::llround(value));
    return c >= 0 && c < static_cast<int64_t>(class_names.size()) ? class_names[c] : std::to_string(c);
  };

  // One rule per leaf, left to right; conditions on one feature merged into an interval.
  struct Condition {
    int64_t feature;
    bool greater;
    float threshold;
  };
  nlohmann::json rules = nlohmann::json::array();
  int depth = 0, leaves = 0;
  int64_t agree_total = 0;
  double sq_err = 0;
  std::function<void(int, std::vector<Condition>&)> walk = [&](int node, std::vector<Condition>& path) {
    const auto& nd = nodes[node];
    if (nd.feature >= 0) {
      path.push_back({nd.feature, false, nd.threshold});
      walk(nd.left, path);
      path.back().greater = true;
      walk(nd.right, path);
      path.pop_back();
      return;
    }
    leaves += 1;
    depth = std::max(depth, static_cast<int>(path.size()));
    std::vector<int64_t> order;
    std::map<int64_t, std::pair<double, double>> bounds;  // feature -> (lower, upper)
    nlohmann::json conditions = nlohmann::json::array();
    for (const auto& c : path) {
      if (!bounds.count(c.feature)) order.push_back(c.feature), bounds[c.feature] = {-INFINITY, INFINITY};
      auto& [lo, hi] = bounds[c.feature];
      if (c.greater) lo = std::max(lo, static_cast<double>(c.threshold));
      else hi = std::min(hi, static_cast<double>(c.threshold));
      conditions.push_back({{"feature", names[c.feature]}, {"index", c.feature}, {"op", c.greater ? ">" : "<="},
                            {"threshold", c.threshold}});
    }
    std::string text;
    for (int64_t f : order) {
      const auto [lo, hi] = bounds[f];
      std::string part = std::isfinite(lo) && std::isfinite(hi) ? fmt(lo) + " < " + names[f] + " <= " + fmt(hi)
                         : std::isfinite(lo)                    ? names[f] + " > " + fmt(lo)
                                                                : names[f] + " <= " + fmt(hi);
      text += (text.empty() ? "if " : " and ") + part;
    }
    const std::string pred = prediction_text(nd.value);
    text = text.empty() ? "always " + pred : text + " then " + pred;
    int64_t reached = 0, agree = 0;
    double abs_err = 0;
    for (int64_t r = 0; r < n; ++r) {
      if (leaf_of[r] != node) continue;
      reached += 1;
      if (classification) {
        agree += model_pred.data_ptr<int>()[r] == static_cast<int>(std::llround(nd.value));
      } else {
        const double e = model_pred.data_ptr<float>()[r] - nd.value;
        abs_err += std::abs(e);
        sq_err += e * e;
      }
    }
    agree_total += agree;
    nlohmann::json rule = {{"rule", text},
                           {"conditions", conditions},
                           {"prediction", classification ? nlohmann::json(std::llround(nd.value)) : nlohmann::json(nd.value)},
                           {"coverage", static_cast<double>(reached) / n}};
    if (classification) {
      rule["prediction_name"] = pred;
      rule["fidelity"] = reached ? static_cast<double>(agree) / reached : 1.0;
    } else {
      rule["mean_absolute_error"] = reached ? abs_err / reached : 0.0;
    }
    rule["samples"] = reached;
    rules.push_back(rule);
  };
  std::vector<Condition> path;
  walk(0, path);

  double fidelity = 0;
  if (classification) {
    fidelity = static_cast<double>(agree_total) / n;
  } else {
    const double mean = model_pred.to(at::kDouble).mean().item<double>();
    const double sst = (model_pred.to(at::kDouble) - mean).pow(2).sum().item<double>();
    fidelity = sst > 0 ? 1.0 - sq_err / sst : (sq_err <= 0 ? 1.0 : 0.0);
  }

  nlohmann::json named = nlohmann::json::array();
  for (int64_t j = 0; j < per; ++j)
    if (importance[j] > 0) named.push_back({{"feature", names[j]}, {"importance", importance[j]}});
  std::stable_sort(named.begin(), named.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    return a["importance"].get<double>() > b["importance"].get<double>();
  });

  Attribution a;
  a.values = at::tensor(importance, at::kDouble).to(x.scalar_type()).view(x.sizes().slice(1)).unsqueeze(0)
                 .expand(x.sizes()).contiguous().to(x.device());
  a.output = out;
  if (classification) {
    const at::Tensor p = model_pred.to(at::kLong);
    a.targets.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + n);
  }
  a.extra = {{"task", classification ? "classification" : "regression"},
             {"rules", rules},
             {"fidelity", fidelity},
             {"depth", depth},
             {"leaves", leaves},
             {"feature_importance", named}};
  if (fidelity < 0.5)
    a.warn("poor_surrogate_fit",
           detail::str_cat("the surrogate tree reproduces the model poorly (",
                           classification ? "agrees on a fraction " : "R^2 ", fidelity,
                           " of the rows, below 0.5): its rules do not describe what the model does. Raise "
                           "max_depth, or give more rows."),
           {{"fidelity", fidelity}, {"metric", classification ? "accuracy" : "r2"}, {"threshold", 0.5}});
  return a;
}

}  // namespace candela
