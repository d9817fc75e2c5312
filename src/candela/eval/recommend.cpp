// Recommendations from an evaluation's summary (eval/recommend.h).
#include "candela/eval/recommend.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <set>
#include <sstream>

#include "candela/core/error.h"

namespace candela {
namespace recommend_detail {

using json = nlohmann::json;

bool finite(const json& v) { return v.is_number() && std::isfinite(v.get<double>()); }

std::string num(const json& v) {
  if (!finite(v)) return "n/a";
  std::ostringstream s;
  s << std::setprecision(3) << v.get<double>();
  return s.str();
}

// "mean [low, high]" as evaluate's summary.md writes it.
std::string cell(const json& e) {
  if (!e.is_object() || !finite(e.value("mean", json()))) return "n/a";
  const json& ci = e.value("ci95", json::array());
  std::string s = num(e["mean"]);
  if (ci.is_array() && ci.size() == 2 && finite(ci[0]) && finite(ci[1])) s += " [" + num(ci[0]) + ", " + num(ci[1]) + "]";
  return s;
}

// Ranks of the methods on one metric, best first; equal means share the average of their ranks.
std::map<std::string, double> ranks(const json& metric, const std::vector<std::string>& methods) {
  const bool higher = metric.value("higher_is_better", true);
  std::vector<std::pair<double, std::string>> v;
  for (const auto& m : methods) {
    const json& e = metric["methods"].contains(m) ? metric["methods"][m] : json();
    if (e.is_object() && finite(e.value("mean", json()))) v.emplace_back(higher ? -e["mean"].get<double>() : e["mean"].get<double>(), m);
  }
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::map<std::string, double> out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j < v.size() && v[j].first == v[i].first) ++j;
    const double r = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;  // mean of ranks i+1..j
    for (size_t k = i; k < j; ++k) out[v[k].second] = r;
    i = j;
  }
  return out;
}

// Is a's 95% interval entirely better than b's on this metric?
bool separated(const json& metric, const std::string& a, const std::string& b) {
  if (!metric.contains("methods") || !metric["methods"].contains(a) || !metric["methods"].contains(b)) return false;
  const json& ea = metric["methods"][a];
  const json& eb = metric["methods"][b];
  const json& ca = ea.value("ci95", json::array());
  const json& cb = eb.value("ci95", json::array());
  if (ca.size() != 2 || cb.size() != 2 || !finite(ca[0]) || !finite(ca[1]) || !finite(cb[0]) || !finite(cb[1]))
    return false;
  return metric.value("higher_is_better", true) ? ca[0].get<double>() > cb[1].get<double>()
                                                : ca[1].get<double>() < cb[0].get<double>();
}

}  // namespace recommend_detail

RecommendSetup recommend_setup(const std::string& kind, int64_t features, bool masks, bool regression,
                               bool randomisable, const std::string& embedding, double sanity_threshold,
                               bool distribution) {
  using json = nlohmann::json;
  CANDELA_CHECK(kind == "images" || kind == "tables" || kind == "tokens", "unknown input kind '", kind,
                "': images, tables or tokens.");
  CANDELA_CHECK(sanity_threshold > 0 && sanity_threshold <= 1, "the randomisation threshold must be in (0, 1], got ",
                sanity_threshold, ".");
  RecommendSetup s;
  s.kind = kind;
  s.plan.sanity_threshold = sanity_threshold;
  RecommendQuestion loc{"localisation", {"pointing_game", "relevance_rank_accuracy"}, ""};
  RecommendQuestion faith{"faithfulness", {}, ""};
  RecommendQuestion stab{"stability", {"max_sensitivity"}, ""};
  RecommendQuestion cost{"cost", {"seconds_per_sample"}, ""};
  RecommendQuestion sanity{"sanity", {"model_parameter_randomisation"}, ""};
  if (!masks)
    loc.unavailable = "no ground-truth masks (give --masks, or put masks beside the data as docs/guide.md names them)";
  if (!randomisable)
    sanity.unavailable = "the randomisation check randomises a TorchScript model's parameters; this model is not one";
  const bool abs = kind != "images";  // rows and tokens: a large negative value is relevant too
  if (kind == "images") {
    s.methods = {"saliency", "input_x_gradient", "integrated_gradients", "grad_cam", "guided_backprop", "deep_lift", "lrp"};
    s.methods_reason =
        "gradient, CAM and propagation methods: one or a few backward passes per image (integrated gradients: 50); "
        "perturbation methods (occlusion, RISE, SHAP sampling) run the model hundreds of times per image, so name "
        "them with --methods when the model is small";
    faith.metrics = {"deletion", "insertion", "faithfulness_correlation"};
    s.metric_options["faithfulness_correlation"] = {{"subset_size", std::max<int64_t>(1, std::min<int64_t>(224, features / 4))}};
  } else if (kind == "tables") {
    s.methods = {"saliency", "input_x_gradient", "integrated_gradients", "deep_lift", "feature_ablation", "kernel_shap"};
    s.methods_reason =
        "gradient and propagation methods (a backward pass per row) and the perturbation methods whose cost grows "
        "with the number of columns only (feature ablation: one model call per column; KernelSHAP: its n_samples "
        "coalitions); LIME and exact Shapley values are slower, name them with --methods";
    faith.metrics = {"faithfulness_correlation", "comprehensiveness", "sufficiency"};
    s.metric_options["faithfulness_correlation"] = {{"subset_size", std::max<int64_t>(1, features / 4)}};
    s.metric_options["comprehensiveness"] = {{"softmax", !regression}};
    s.metric_options["sufficiency"] = {{"softmax", !regression}};
  } else {
    CANDELA_CHECK(!embedding.empty(), "the token model has no embedding layer Candela can find; name it with "
                                      "--method-option layer_integrated_gradients.layers=NAME (see `candela info`).");
    s.methods = {"layer_integrated_gradients", "layer_gradient_x_activation", "attention_rollout",
                 "grad_attention_rollout", "attn_lrp", "feature_ablation"};
    for (const char* m : {"layer_integrated_gradients", "layer_gradient_x_activation", "attn_lrp"})
      s.method_options[m] = {{"layers", json::array({embedding})}};
    s.methods_reason =
        "token ids have no gradient, so the gradient methods explain at the embedding layer '" + embedding +
        "'; attention methods read the attention maps of one forward pass; feature ablation replaces one token at a "
        "time by [PAD] (id 0)";
    faith.metrics = {"comprehensiveness", "sufficiency"};
    stab.metrics.clear();
    stab.unavailable = "input noise is not defined on token ids";
  }
  if (distribution && kind != "tokens") {
    std::vector<std::string> methods;
    for (const auto& m : s.methods)
      if (m == "integrated_gradients") methods.push_back("expected_gradients");
      else if (m == "deep_lift") methods.push_back("deep_lift_shap");
      else if (m != "feature_ablation") methods.push_back(m);
    s.methods = methods;
    s.methods_reason += "; with a baseline distribution, expected gradients and DeepLIFT-SHAP stand in for integrated "
                        "gradients and DeepLIFT";
  }
  s.metric_options["pointing_game"] = {{"abs", abs}};
  s.metric_options["relevance_rank_accuracy"] = {{"abs", abs}};
  s.metric_options["max_sensitivity"] = {{"nr_samples", 10}};
  s.plan.questions = {loc, faith, stab, cost, sanity};
  for (const auto& q : s.plan.questions)
    if (q.unavailable.empty())
      for (const auto& m : q.metrics)
        if (m != "seconds_per_sample") s.metrics.push_back(m);
  for (auto it = s.metric_options.begin(); it != s.metric_options.end();)
    it = std::find(s.metrics.begin(), s.metrics.end(), it->first) == s.metrics.end() ? s.metric_options.erase(it)
                                                                                      : std::next(it);
  return s;
}

nlohmann::json rank_recommendations(const nlohmann::json& summary, const std::vector<std::string>& methods,
                                    const RecommendPlan& plan) {
  using namespace recommend_detail;
  json out = {{"questions", json::array()}, {"avoid", json::array()}, {"sanity", json::object()}};
  // The randomisation check first: its failures are avoided in every question.
  std::set<std::string> avoid;
  const bool sanity_run = summary.contains(plan.sanity_metric);
  if (sanity_run) {
    const json& s = summary[plan.sanity_metric];
    for (const auto& m : methods) {
      const json& e = s["methods"].contains(m) ? s["methods"][m] : json();
      if (!e.is_object() || !finite(e.value("mean", json()))) continue;
      const json& ci = e.value("ci95", json::array());
      const double lo = ci.size() == 2 && finite(ci[0]) ? ci[0].get<double>() : e["mean"].get<double>();
      const double hi = ci.size() == 2 && finite(ci[1]) ? ci[1].get<double>() : e["mean"].get<double>();
      const std::string verdict = lo > plan.sanity_threshold ? "fail" : hi < plan.sanity_threshold ? "pass" : "borderline";
      out["sanity"][m] = verdict;
      if (verdict != "fail") continue;
      avoid.insert(m);
      std::ostringstream why;
      why << "fails the randomisation check: its map keeps a similarity of " << cell(e) << " to the map of the model "
          << "with randomised weights, above " << plan.sanity_threshold
          << " over the whole 95% interval, so it shows little of what the model learned (Adebayo et al. 2018)";
      out["avoid"].push_back({{"method", m}, {"reason", why.str()}, {"evidence", {{plan.sanity_metric, e}}}});
    }
  }
  for (const auto& q : plan.questions) {
    json jq = {{"name", q.name}, {"metrics", q.metrics}};
    std::string unavailable = q.unavailable;
    if (unavailable.empty())
      for (const auto& metric : q.metrics)
        if (!summary.contains(metric)) unavailable = "the run has no " + metric;
    if (!unavailable.empty()) {
      jq["unavailable"] = unavailable;
      out["questions"].push_back(jq);
      continue;
    }
    std::map<std::string, std::map<std::string, double>> per;  // metric -> method -> rank
    for (const auto& metric : q.metrics) per[metric] = ranks(summary[metric], methods);
    std::vector<std::pair<double, std::string>> scored;
    json better = json::object();
    for (const auto& metric : q.metrics) better[metric] = summary[metric].value("higher_is_better", true) ? "higher" : "lower";
    for (const auto& m : methods) {
      double sum = 0;
      int count = 0;
      for (const auto& metric : q.metrics)
        if (per[metric].count(m)) sum += per[metric][m], ++count;
      if (count > 0) scored.emplace_back(sum / count, m);
    }
    std::stable_sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    json ranking = json::array();
    for (size_t i = 0; i < scored.size(); ++i) {
      size_t position = 1;
      for (size_t k = 0; k < i; ++k)
        if (scored[k].first < scored[i].first - 1e-9) ++position;
      json evidence = json::object();
      for (const auto& metric : q.metrics) {
        json e = summary[metric]["methods"].contains(scored[i].second) ? summary[metric]["methods"][scored[i].second] : json();
        if (!e.is_object()) e = json{{"mean", nullptr}};
        e.erase("curve");
        if (per[metric].count(scored[i].second)) e["rank"] = per[metric][scored[i].second];
        evidence[metric] = e;
      }
      ranking.push_back({{"method", scored[i].second}, {"position", position}, {"mean_rank", scored[i].first},
                         {"avoid", avoid.count(scored[i].second) > 0}, {"evidence", evidence}});
    }
    // The recommendation: the best-placed methods not avoided (several when tied).
    json recommended = json::array();
    int64_t best = -1;
    for (const auto& r : ranking) {
      if (r["avoid"].get<bool>()) continue;
      if (best < 0) best = r["position"].get<int64_t>();
      if (r["position"].get<int64_t>() == best) recommended.push_back(r["method"]);
    }
    jq["better"] = better;
    jq["ranking"] = ranking;
    jq["recommended"] = recommended;
    // Clear: on every metric of the question, the recommended method's interval is better than
    // the interval of the next method placed after it.
    bool clear = false;
    std::string note;
    if (recommended.empty()) {
      note = ranking.empty() ? "no method has a value on these metrics" : "every ranked method fails the randomisation check";
    } else {
      const std::string top = recommended[0];
      std::string next;
      for (const auto& r : ranking)
        if (r["position"].get<int64_t>() > best && !r["avoid"].get<bool>()) {
          next = r["method"];
          break;
        }
      if (recommended.size() > 1) {
        note = "tied: the methods share the first place on these metrics";
      } else if (next.empty()) {
        clear = true;
      } else {
        clear = true;
        for (const auto& metric : q.metrics) clear = clear && separated(summary[metric], top, next);
        if (!clear)
          note = "the 95% intervals of " + top + " and " + next +
                 " overlap on at least one metric: more samples (--samples) may change the order";
      }
    }
    jq["clear"] = clear;
    if (!note.empty()) jq["note"] = note;
    out["questions"].push_back(jq);
  }
  return out;
}

namespace {
std::string question_title(const std::string& name) {
  if (name == "localisation") return "localisation: does the map point at the ground truth?";
  if (name == "faithfulness") return "faithfulness: does removing what the map ranks first change the output most?";
  if (name == "stability") return "stability: does the map stay put under small input noise?";
  if (name == "cost") return "cost: seconds per sample for the explanation";
  if (name == "sanity") return "sanity: does the map change when the model's weights are randomised?";
  return name;
}
}  // namespace

std::string recommend_markdown(const nlohmann::json& r) {
  using namespace recommend_detail;
  std::ostringstream md;
  for (const auto& q : r["questions"]) {
    const std::string name = q["name"];
    md << "### " << name << "\n\n";
    if (q.contains("unavailable")) {
      md << "Not measured: " << q["unavailable"].get<std::string>() << ".\n\n";
      continue;
    }
    md << "| position | method | mean rank |";
    for (const auto& m : q["metrics"]) md << " " << m.get<std::string>() << " (" << q["better"][m.get<std::string>()].get<std::string>() << ") |";
    md << "\n|---|---|---|";
    for (size_t i = 0; i < q["metrics"].size(); ++i) md << "---|";
    md << "\n";
    for (const auto& e : q["ranking"]) {
      md << "| " << e["position"].get<int64_t>() << " | " << e["method"].get<std::string>()
         << (e["avoid"].get<bool>() ? " (avoid)" : "") << " | " << num(e["mean_rank"]) << " |";
      for (const auto& m : q["metrics"]) md << " " << cell(e["evidence"][m.get<std::string>()]) << " |";
      md << "\n";
    }
    md << "\n";
    if (!q["recommended"].empty()) {
      md << "Recommended: ";
      for (size_t i = 0; i < q["recommended"].size(); ++i) md << (i ? ", " : "") << q["recommended"][i].get<std::string>();
      md << (q["clear"].get<bool>() ? " (its 95% intervals are better than the runner-up's on every metric)" : "");
      md << ".";
    }
    if (q.contains("note")) md << " Note: " << q["note"].get<std::string>() << ".";
    md << "\n\n";
  }
  md << "### avoid\n\n";
  if (r["avoid"].empty()) md << "No method fails the randomisation check in this run.\n";
  for (const auto& a : r["avoid"]) md << "- " << a["method"].get<std::string>() << ": " << a["reason"].get<std::string>() << ".\n";
  if (r.contains("skipped") && !r["skipped"].empty()) {
    md << "\n### skipped\n\n";
    for (const auto& s : r["skipped"]) md << "- " << s["method"].get<std::string>() << ": " << s["reason"].get<std::string>() << "\n";
  }
  return md.str();
}

std::string recommend_text(const nlohmann::json& r) {
  using namespace recommend_detail;
  std::ostringstream t;
  if (r.contains("data"))
    t << "recommend: " << r["samples"].get<int64_t>() << " samples of " << r["data"].get<std::string>() << " ("
      << r["kind"].get<std::string>() << "), " << r["methods"].size() << " methods, " << std::fixed
      << std::setprecision(1) << r.value("seconds", 0.0) << " s\n" << std::defaultfloat;
  if (r.contains("ground_truth"))
    t << "ground truth: " << (r["ground_truth"].is_null() ? "none" : r["ground_truth"].get<std::string>()) << "\n";
  for (const auto& q : r["questions"]) {
    t << "\n" << question_title(q["name"]) << "\n";
    if (q.contains("unavailable")) {
      t << "  not measured: " << q["unavailable"].get<std::string>() << "\n";
      continue;
    }
    t << "  use: ";
    if (q["recommended"].empty()) t << "none";
    for (size_t i = 0; i < q["recommended"].size(); ++i) t << (i ? ", " : "") << q["recommended"][i].get<std::string>();
    t << (q["clear"].get<bool>() ? "" : q.contains("note") ? "  (" + q["note"].get<std::string>() + ")" : "") << "\n";
    size_t width = 6;
    for (const auto& e : q["ranking"])
      width = std::max(width, e["method"].get<std::string>().size() + (e["avoid"].get<bool>() ? 8 : 0));
    for (const auto& e : q["ranking"]) {
      std::string name = e["method"].get<std::string>() + (e["avoid"].get<bool>() ? " (avoid)" : "");
      t << "  " << std::setw(2) << e["position"].get<int64_t>() << ". " << std::left << std::setw(static_cast<int>(width))
        << name << std::right;
      for (const auto& m : q["metrics"]) t << "  " << m.get<std::string>() << " " << cell(e["evidence"][m.get<std::string>()]);
      t << "\n";
    }
  }
  t << "\navoid:";
  if (r["avoid"].empty()) t << " none (no method fails the randomisation check)";
  t << "\n";
  for (const auto& a : r["avoid"]) t << "  " << a["method"].get<std::string>() << ": " << a["reason"].get<std::string>() << "\n";
  if (r.contains("skipped"))
    for (const auto& s : r["skipped"]) t << "skipped " << s["method"].get<std::string>() << ": " << s["reason"].get<std::string>() << "\n";
  return t.str();
}

}  // namespace candela
