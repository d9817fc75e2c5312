#include "candela/render/words.h"

#include <algorithm>
#include <cctype>
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

// How the top features move the strongest other class (extra.contrast: that class explained too):
// "Against X, the strongest other class: a lowered its score by 1 and b raised it by 2." `named` holds the top
// features as (name, the runner-up's attribution) in the order the sentences named them.
void contrast_sentence(json& out, int64_t other, const std::vector<std::string>& names,
                       const std::vector<std::pair<std::string, double>>& named, const char* unit) {
  if (named.empty()) return;
  std::string text = "Against " + class_label(other, names) + ", the strongest other class: ";
  json items = json::array();
  for (size_t k = 0; k < named.size(); ++k) {
    const auto& [name, a] = named[k];
    const std::string dir = a > 0 ? "raised" : a < 0 ? "lowered" : "did not move";
    if (k) text += k + 1 == named.size() ? " and " : ", ";
    text += (*unit ? std::string(unit) + " " : "") + name + " " + dir + (k ? " it" : " its score");
    if (a != 0) text += " by " + words_number(std::abs(a));
    items.push_back({{"name", name}, {"attribution", std::abs(a)}, {"direction", dir}});
  }
  out.push_back(sentence("contrast", text + ".", {{"class", other}, {"features", items}}));
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
void feature_sentences(json& out, const json& rows, const std::string& target_label, const json& contrast, int64_t sample,
                       const std::vector<std::string>& class_names) {
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
    json values = {{"rank", k + 1}, {"feature", r.at("feature")}, {"index", r.at("index")}, {"value", x},
                   {"attribution", std::abs(a)}, {"direction", dir}};
    // Where the value lies among the reference rows (training data), when they were given.
    std::string where;
    if (r.contains("percentile")) {
      const double p = r.at("percentile").get<double>();
      values["percentile"] = p;
      if (p >= 90) {
        where = " (above the 90th percentile)";
        values["band"] = 90;
      } else if (p <= 10) {
        where = " (below the 10th percentile)";
        values["band"] = 10;
      } else {
        const int64_t q = std::llround(p);
        const char* suffix = q % 100 >= 11 && q % 100 <= 13 ? "th" : q % 10 == 1 ? "st" : q % 10 == 2 ? "nd" : q % 10 == 3 ? "rd" : "th";
        where = " (at the " + std::to_string(q) + suffix + " percentile)";
        values["band"] = q;
      }
    }
    out.push_back(sentence("feature",
                           "The " + std::string(ordinal(k + 1)) + " effect: " + r.at("feature").get<std::string>() + " = " +
                               words_number(x) + where + " " + dir + " the score of " + target_label + " by " +
                               words_number(std::abs(a)) + ".",
                           std::move(values)));
  }
  if (contrast.is_object()) {
    std::vector<std::pair<std::string, double>> named;
    for (int64_t k = 0; k < shown && rows[k].at("attribution").get<double>() != 0; ++k)
      named.emplace_back(rows[k].at("feature").get<std::string>(),
                         contrast["values"][sample][rows[k].at("index").get<size_t>()].get<double>());
    contrast_sentence(out, contrast["classes"][sample], class_names, named, "");
  }
  out.push_back(sentence("concentration",
                         "These " + std::to_string(shown) + " of " + std::to_string(rows.size()) + " features hold " +
                             words_number(100 * top / total) + "% of the total absolute attribution.",
                         {{"count", shown}, {"of", rows.size()}, {"percent", 100 * top / total}}));
}

// Token models: the three tokens (or words, when pieces were merged) of largest |attribution|
// by text and position, special tokens left out; concentration over the same tokens.
void token_sentences(json& out, const json& sample, const std::string& target_label, const json& contrast, int64_t index,
                     const std::vector<std::string>& class_names) {
  const bool words = sample.contains("words");
  struct Item {
    std::string text;
    int64_t position;
    double value, other;  // other: the runner-up's attribution (contrast), else 0
  };
  // The runner-up's value of a token, or of a word's pieces combined as the word's value is.
  auto other_of = [&](const std::vector<int64_t>& pieces) {
    if (!contrast.is_object()) return 0.0;
    const json& row = contrast["values"][index];
    double total = 0, best = -INFINITY;
    for (int64_t j : pieces) total += row[static_cast<size_t>(j)].get<double>(), best = std::max(best, row[static_cast<size_t>(j)].get<double>());
    const std::string r = sample.value("word_reduction", "sum");
    return r == "mean" ? total / static_cast<double>(pieces.size()) : r == "max" ? best : total;
  };
  std::vector<Item> items;
  if (words) {
    for (size_t w = 0; w < sample["words"].size(); ++w)
      items.push_back({sample["words"][w]["word"], static_cast<int64_t>(w), sample["words"][w]["value"],
                       other_of(sample["words"][w]["tokens"].get<std::vector<int64_t>>())});
  } else {
    for (const auto& t : sample["tokens"])
      if (t.value("word", int64_t{-1}) >= 0) items.push_back({t["token"], t["index"], t["value"], other_of({t["index"].get<int64_t>()})});
  }
  double total = 0;
  for (const auto& it : items) total += std::abs(it.value);
  if (total <= 0) return;
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return std::abs(a.value) > std::abs(b.value); });
  const int64_t shown = std::min<int64_t>(3, static_cast<int64_t>(items.size()));
  const char* unit = words ? "word" : "token";
  double top = 0;
  int64_t said = 0;
  for (int64_t k = 0; k < shown; ++k) {
    const Item& it = items[static_cast<size_t>(k)];
    if (it.value == 0) break;
    top += std::abs(it.value);
    ++said;
    const std::string dir = it.value > 0 ? "raised" : "lowered";
    out.push_back(sentence("token",
                           "The " + std::string(ordinal(k + 1)) + " effect: the " + unit + " \"" + it.text + "\" (" + (words ? "word " : "position ") +
                               std::to_string(it.position) + ") " + dir + " the score of " + target_label + " by " +
                               words_number(std::abs(it.value)) + ".",
                           {{"rank", k + 1}, {unit, it.text}, {"position", it.position}, {"attribution", std::abs(it.value)},
                            {"direction", dir}}));
  }
  if (said == 0) return;
  if (contrast.is_object()) {
    std::vector<std::pair<std::string, double>> named;
    for (int64_t k = 0; k < said; ++k) named.emplace_back("\"" + items[static_cast<size_t>(k)].text + "\"", items[static_cast<size_t>(k)].other);
    contrast_sentence(out, contrast["classes"][index], class_names, named, unit);
  }
  out.push_back(sentence("concentration",
                         "These " + std::to_string(said) + " of " + std::to_string(items.size()) + " " + unit + "s hold " +
                             words_number(100 * top / total) + "% of the total absolute attribution" +
                             (words ? "." : " (special tokens left out)."),
                         {{"count", said}, {"of", items.size()}, {"percent", 100 * top / total}}));
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
    const json& extra_all = meta.value("extra", json::object());
    const json contrast = extra_all.is_object() ? extra_all.value("contrast", json()) : json();
    if (meta.contains("features") && i < static_cast<int64_t>(meta["features"].size()))
      feature_sentences(s, meta["features"][i], label, contrast, i, class_names);
    else if (meta.contains("tokens") && i < static_cast<int64_t>(meta["tokens"].size()))
      token_sentences(s, meta["tokens"][i], label, contrast, i, class_names);
    else if (spatial)
      region_sentences(s, values[i].detach().cpu(), label);
    // The segment (superpixel, grid cell) holding the most evidence, when the method attributed
    // to segments (extra.segments, made by the explain job).
    const json segments = extra_all.is_object() ? extra_all.value("segments", json()) : json();
    if (segments.is_object() && i < static_cast<int64_t>(segments["samples"].size()) && segments["samples"][i].is_object()) {
      const json& g = segments["samples"][i];
      const std::string kind = segments.value("kind", "segment");
      s.push_back(sentence("segment",
                           std::string(1, static_cast<char>(std::toupper(kind[0]))) + kind.substr(1) + " " +
                               std::to_string(g["id"].get<int64_t>()) + " (" + words_number(g["area_percent"].get<double>()) +
                               "% of the image, centred in the " + g["region"].get<std::string>() + " ninth) holds " +
                               words_number(g["percent"].get<double>()) + "% of the positive attribution for " + label + ".",
                           {{"id", g["id"]}, {"kind", kind}, {"area_percent", g["area_percent"]}, {"region", g["region"]},
                            {"percent", g["percent"]}}));
    }
    // Sentences that name the target class carry its index too.
    for (auto& x : s)
      if (target >= 0 && (x["kind"] == "feature" || x["kind"] == "region" || x["kind"] == "token" || x["kind"] == "segment"))
        x["values"]["target"] = target;
    // Whether the top class holds under a tiny perturbation (extra.prediction_stability, made by
    // the explain job: candela/app/jobs.h).
    const json stability = extra_all.is_object() ? extra_all.value("prediction_stability", json()) : json();
    if (stability.is_object() && stability.contains("changed") && i < static_cast<int64_t>(stability["changed"].size())) {
      const int64_t copies = stability["copies"], changed = stability["changed"][i];
      const double noise = stability["noise_percent"];
      const std::string how = " copies of the input with Gaussian noise of " + words_number(noise) + "% of its scale";
      if (changed == 0) {
        s.push_back(sentence("stability", "The top class stays the same in all " + std::to_string(copies) + how + ".",
                             {{"copies", copies}, {"changed", changed}, {"noise_percent", noise}, {"caveat", false}}));
      } else {
        const int64_t to = stability["most_common_other"][i];
        s.push_back(sentence("stability",
                             "Caveat: the top class changes in " + std::to_string(changed) + " of " + std::to_string(copies) + how +
                                 ", most often to " + class_label(to, class_names) + ".",
                             {{"copies", copies}, {"changed", changed}, {"noise_percent", noise}, {"class", to}, {"caveat", true}}));
      }
    }
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

json report_caveats(const json& results, const json& agreement) {
  json out = json::array();
  for (const auto& r : results) {
    const json rnd = r.value("randomisation", json());
    if (!rnd.is_object() || !rnd.contains("similarity") || !rnd["similarity"].is_number()) continue;
    const double sim = rnd["similarity"];
    if (sim <= kRandomisationFlag) continue;
    const std::string method = r.value("method", "");
    out.push_back(sentence("randomisation",
                           "Caveat: the map of " + method + " barely changes when the model's layers are randomised "
                           "(similarity " + words_number(sim) + " above " + words_number(kRandomisationFlag) +
                           "): it may not depend on what the model learned.",
                           {{"method", method}, {"similarity", sim}, {"threshold", kRandomisationFlag}, {"caveat", true}}));
  }
  for (const auto& g : agreement) {
    if (!g.value("spearman", json()).is_number() || !g.value("top_iou", json()).is_number()) continue;
    const double rho = g["spearman"], iou = g["top_iou"];
    if (rho >= kDisagreementRho || iou >= kDisagreementIou) continue;
    const std::string a = g.value("a", ""), b = g.value("b", "");
    out.push_back(sentence("disagreement",
                           "Caveat: " + a + " and " + b + " point at different evidence (rank correlation " + words_number(rho) +
                               ", overlap of their top 10% " + words_number(iou) + ").",
                           {{"a", a}, {"b", b}, {"spearman", rho}, {"top_iou", iou}, {"top_percent", 10},
                            {"thresholds", {{"spearman", kDisagreementRho}, {"top_iou", kDisagreementIou}}}, {"caveat", true}}));
  }
  return out;
}

}  // namespace candela
