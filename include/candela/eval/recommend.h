// Recommendations from an evaluation: which method to use for which question, with the numbers
// that back it. `candela recommend` runs a short evaluation (eval/evaluate.h) on the user's model
// and data and hands its summary to rank_recommendations(); docs/guide.md is generated from the
// same output over the ground-truth sets (scripts/make_guide.py).
//
// Questions and the metrics that answer them (each metric as `candela metrics` defines it):
//   localisation  pointing_game, relevance_rank_accuracy   (only with ground-truth masks)
//   faithfulness  images: deletion, insertion, faithfulness_correlation;
//                 tables: faithfulness_correlation, comprehensiveness, sufficiency;
//                 tokens: comprehensiveness, sufficiency
//   stability     max_sensitivity (not for tokens: noise on token ids is not an input)
//   cost          seconds_per_sample, measured in the run (the explanation only)
//   sanity        model_parameter_randomisation (Adebayo et al. 2018): a method whose map stays
//                 similar to the map of the model with randomised weights (95% interval entirely
//                 above the threshold) fails and is listed under "avoid".
// A question's ranking is the mean of the method's ranks over the question's metrics (equal
// means share their average rank; equal mean ranks share a position); the recommendation is the
// best-placed method that is not under "avoid".
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace candela {

struct RecommendQuestion {
  std::string name;                  // localisation, faithfulness, stability, cost, sanity
  std::vector<std::string> metrics;  // summary keys; "seconds_per_sample" for cost
  std::string unavailable;           // non-empty: why this question is not answered in this run
};

struct RecommendPlan {
  std::vector<RecommendQuestion> questions;
  std::string sanity_metric = "model_parameter_randomisation";
  double sanity_threshold = 0.8;  // the web UI's trust panel warns above the same similarity
};

// What a short run measures for one kind of input: methods (with options), metrics (with
// options) and the questions they answer.
struct RecommendSetup {
  std::string kind;  // images, tables, tokens
  std::vector<std::string> methods;
  std::map<std::string, nlohmann::json> method_options;
  std::string methods_reason;  // why these methods by default
  std::vector<std::string> metrics;
  std::map<std::string, nlohmann::json> metric_options;
  RecommendPlan plan;
};

// kind: images, tables or tokens; features: inputs per sample (pixels for images, columns,
// tokens); masks: ground truth available; regression: the model's output is not a class score;
// randomisable: the model is TorchScript (its parameters can be randomised); embedding: the
// embedding layer of a token model (the layer methods explain there); distribution: the baseline
// is a distribution (dist:FILE.npy), so the methods that take one reference are replaced by their
// expectation over it (expected gradients, DeepLIFT-SHAP).
RecommendSetup recommend_setup(const std::string& kind, int64_t features, bool masks, bool regression,
                               bool randomisable, const std::string& embedding, double sanity_threshold,
                               bool distribution = false);

// summary: evaluate's results.json "summary" ({metric: {higher_is_better, methods: {m: {mean,
// ci95, n}}}}) with "seconds_per_sample" added in the same form. Returns {"questions": [{name,
// metrics, better: {metric: "higher"|"lower"}, ranking: [{method, position, mean_rank, avoid,
// evidence: {metric: {mean, ci95, n, rank}}}], recommended: [methods], clear, note} or {name,
// unavailable}], "avoid": [{method, reason, evidence}], "sanity": {method: pass|fail|borderline}}.
nlohmann::json rank_recommendations(const nlohmann::json& summary, const std::vector<std::string>& methods,
                                    const RecommendPlan& plan);

// recommend.json as Markdown tables (recommend.md) and as the terminal's text.
std::string recommend_markdown(const nlohmann::json& recommendation);
std::string recommend_text(const nlohmann::json& recommendation);

}  // namespace candela
