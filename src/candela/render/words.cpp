#include "candela/render/words.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace candela {

std::string words_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::string words_region(int64_t r, int64_t c) {
  static const char* rows[] = {"top", "middle", "bottom"};
  static const char* cols[] = {"left", "centre", "right"};
  if (r == 1 && c == 1) return "centre";
  if (r == 1) return std::string("middle ") + cols[c];
  return std::string(rows[r]) + " " + cols[c];
}

namespace {

using json = nlohmann::json;
const char* ordinal(int64_t k) { return k == 1 ? "largest" : k == 2 ? "second largest" : "third largest"; }

json sentence(const std::string& kind, std::string text, json values) {
  return {{"kind", kind}, {"text", std::move(text)}, {"values", std::move(values)}};
}

std::string class_label(int64_t c, const std::vector<std::string>& names) {
  const std::string n = c >= 0 && c < static_cast<int64_t>(names.size()) ? names[c] : "";
  return n.empty() || n == std::to_string(c) ? "class " + std::to_string(c) : "'" + n + "' (class " + std::to_string(c) + ")";
}

// Prediction, target and runner-up, from the model's output row.
void prediction_sentences(json& out, const std::vector<double>& row, int64_t target, const std::vector<std::string>& names,
                          const std::string& kind) {
  const int64_t k = static_cast<int64_t>(row.size());
  if (k < 2) return;
  std::vector<double> p = row;
  const bool logits = kind == "logits";
  if (logits) {
    const double m = *std::max_element(row.begin(), row.end());
    double z = 0;
    for (double& v : p) z += (v = std::exp(v - m));
    for (double& v : p) v /= z;
  }
  std::vector<int64_t> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
  const int64_t top = order[0], second = order[1];
  const char* what = logits || kind == "probabilities" ? "probability" : "score";
  out.push_back(sentence("prediction",
                         "The model predicts " + class_label(top, names) + " with " + what + " " + words_number(p[top]) + ".",
                         {{"class", top}, {what, p[top]}}));
  out.push_back(sentence("runner_up",
                         "The runner-up is " + class_label(second, names) + " at " + words_number(p[second]) +
                             (logits ? "; the logit margin between them is " + words_number(row[top] - row[second]) : "") + ".",
                         logits ? json{{"class", second}, {what, p[second]}, {"margin", row[top] - row[second]}}
                                : json{{"class", second}, {what, p[second]}}));
  if (target >= 0 && target != top)
    out.push_back(sentence("target", "This explanation is for " + class_label(target, names) + ", which has " + what + " " +
                                         words_number(p[target]) + ", not for the predicted class.",
                           {{"class", target}, {what, p[target]}}));
}

// Tabular rows: the three largest |attributions| by name, value and direction; concentration.
void feature_sentences(json& out, const json& rows, const std::string& target_label) {
  double total = 0;
  for (const auto& r : rows) total += std::abs(r.at("attribution").get<double>());
  if (total <= 0) return;
  const int64_t shown = std::min<int64_t>(3, static_cast<int64_t>(rows.size()));
  double top = 0;
  for (int64_t k = 0; k < shown; ++k) {
    const auto& r = rows[k];
    const double a = r.at("attribution").get<double>(), x = r.at("value").get<double>();
    if (a == 0) break;
    top += std::abs(a);
    const std::string dir = a > 0 ? "raised" : "lowered";
    out.push_back(sentence("feature",
                           "The " + std::string(ordinal(k + 1)) + " effect: " + r.at("feature").get<std::string>() + " = " +
                               words_number(x) + " " + dir + " the score of " + target_label + " by " + words_number(std::abs(a)) + ".",
                           {{"rank", k + 1}, {"feature", r.at("feature")}, {"index", r.at("index")}, {"value", x},
                            {"attribution", std::abs(a)}, {"direction", dir}}));
  }
  out.push_back(sentence("concentration",
                         "These " + std::to_string(shown) + " of " + std::to_string(rows.size()) + " features hold " +
                             words_number(100 * top / total) + "% of the total absolute attribution.",
                         {{"count", shown}, {"of", rows.size()}, {"percent", 100 * top / total}}));
}

// Images: which 3x3 part holds the most positive and the most negative attribution; how much
// of the absolute attribution the top 10% of pixels hold.
void region_sentences(json& out, const at::Tensor& v, const std::string& target_label) {
  at::Tensor m = v.to(at::kDouble);
  if (m.dim() == 3) m = m.sum(0);
  if (m.dim() != 2 || m.size(0) < 3 || m.size(1) < 3) return;
  const int64_t h = m.size(0), w = m.size(1);
  const at::Tensor pos = m.clamp_min(0), neg = (-m).clamp_min(0);
  for (const auto& [part, sign] : {std::pair<const at::Tensor&, const char*>{pos, "positive"}, {neg, "negative"}}) {
    const double total = part.sum().item<double>();
    if (total <= 0) continue;
    double best = -1;
    int64_t br = 0, bc = 0;
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t c = 0; c < 3; ++c) {
        const double s = part.slice(0, r * h / 3, (r + 1) * h / 3).slice(1, c * w / 3, (c + 1) * w / 3).sum().item<double>();
        if (s > best) best = s, br = r, bc = c;
      }
    const std::string where = words_region(br, bc);
    const bool for_it = std::string(sign) == "positive";
    out.push_back(sentence("region",
                           std::string(for_it ? "Most evidence for " : "Most evidence against ") + target_label + " (" +
                               words_number(100 * best / total) + "% of the " + sign + " attribution) lies in the " + where +
                               " ninth of the image.",
                           {{"sign", sign}, {"region", where}, {"row", br}, {"col", bc}, {"percent", 100 * best / total}}));
  }
  const at::Tensor a = m.abs().flatten();
  const double total = a.sum().item<double>();
  if (total <= 0) return;
  const int64_t k = std::max<int64_t>(1, a.numel() / 10);
  const double top = std::get<0>(a.topk(k)).sum().item<double>();
  out.push_back(sentence("concentration",
                         "The top 10% of pixels (" + std::to_string(k) + " of " + std::to_string(a.numel()) + ") hold " +
                             words_number(100 * top / total) + "% of the absolute attribution.",
                         {{"top_percent", 10}, {"count", k}, {"of", a.numel()}, {"percent", 100 * top / total}}));
}

}  // namespace

json explain_in_words(const json& meta, const at::Tensor& values, bool spatial, const std::vector<std::string>& class_names,
                      const std::string& output_kind) {
  json out = json::array();
  if (!values.defined() || values.dim() < 1) return out;
  const int64_t n = values.size(0);
  const json& outputs = meta.value("output", json::array());
  const json& targets = meta.value("targets", json::array());
  const json& delta = meta.value("convergence_delta", json());
  const json& change = meta.value("output_change", json());
  for (int64_t i = 0; i < n; ++i) {
    json s = json::array();
    const int64_t target = i < static_cast<int64_t>(targets.size()) ? targets[i].get<int64_t>()
                           : targets.size() == 1                    ? targets[0].get<int64_t>()
                                                                    : -1;
    if (i < static_cast<int64_t>(outputs.size()) && outputs[i].is_array()) {
      std::vector<double> row;
      for (const auto& v : outputs[i]) row.push_back(v.is_number() ? v.get<double>() : std::nan(""));
      if (std::all_of(row.begin(), row.end(), [](double v) { return std::isfinite(v); }))
        prediction_sentences(s, row, target, class_names, output_kind);
    }
    const std::string label = target >= 0 ? class_label(target, class_names) : "the target";
    if (meta.contains("features") && i < static_cast<int64_t>(meta["features"].size()))
      feature_sentences(s, meta["features"][i], label);
    else if (spatial)
      region_sentences(s, values[i].detach().cpu(), label);
    // Sentences that name the target class carry its index too.
    for (auto& x : s)
      if (target >= 0 && (x["kind"] == "feature" || x["kind"] == "region")) x["values"]["target"] = target;
    if (delta.is_array() && change.is_array() && i < static_cast<int64_t>(delta.size()) && i < static_cast<int64_t>(change.size()) &&
        delta[i].is_number() && change[i].is_number() && change[i].get<double>() != 0) {
      const double d = delta[i], c = change[i], pct = 100 * std::abs(d) / std::abs(c);
      s.push_back(sentence("completeness",
                           pct > 5 ? "Caveat: the attributions miss " + words_number(pct) + "% of the output change " +
                                         words_number(c) + " (completeness delta " + words_number(d) + ")."
                                   : "The attributions add up to the output change " + words_number(c) + " within " +
                                         words_number(pct) + "% (completeness delta " + words_number(d) + ").",
                           {{"delta", d}, {"output_change", c}, {"percent", pct}, {"caveat", pct > 5}}));
    }
    for (const auto& w : meta.value("warnings", json::array())) {
      const std::string text = w.is_object() ? w.value("message", "") : w.is_string() ? w.get<std::string>() : "";
      if (!text.empty()) s.push_back(sentence("warning", "Caveat: " + text, {{"warning", w}}));
    }
    out.push_back({{"sample", i}, {"sentences", s}});
  }
  return out;
}

}  // namespace candela
