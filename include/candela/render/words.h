// Explanations in words: sentences made from an explanation's numbers by fixed rules, never free
// text. Each sentence carries the values it was made from (`values`), so a program can check
// every number, rank and direction it states against the result (tests/unit/test_words.cpp).
//
//   [{"sample": 0, "sentences": [{"kind": "prediction", "text": "The model predicts ...",
//                                 "values": {"class": 2, "probability": 0.998, ...}}, ...]}]
//
// Kinds: prediction, target, runner_up, feature (tabular: the three largest |attributions| by name,
// value and direction, and the value's percentile among reference rows when the features carry
// one), token (token models: the three largest |attributions| by text and position, special
// tokens left out; words when pieces were merged), region (images: the 3x3 part of the image
// holding the most positive and the most negative attribution), contrast (how those top features
// move the strongest other class, when the job explained it too: `extra.contrast`, ExplainJob's
// `explain_in_words`), concentration, stability (whether
// the top class holds under tiny noise: `extra.prediction_stability`, also made with
// `explain_in_words`), completeness, warning.
// Numbers are written with 3 significant digits (`words_number`); percentages are of the stated
// total.
#pragma once

#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace candela {

// `meta` is attribution.json's content (output, targets, target_names, predicted, convergence
// delta, output change, warnings, extra, features for tabular rows, tokens for token models); `values` the attributions [N, ...];
// `spatial` whether values[i] is an image map ([C, H, W] in NCHW or a CAM [1, H, W] / [H, W]);
// `class_names` the model's; `output_kind` "logits", "probabilities" or "regression".
nlohmann::json explain_in_words(const nlohmann::json& meta, const at::Tensor& values, bool spatial,
                                const std::vector<std::string>& class_names, const std::string& output_kind);

// The caveats a report's trust figures support for one sample, as sentences (kinds
// "randomisation" and "disagreement"): a method whose map barely changes when the model's layers
// are randomised (similarity above kRandomisationFlag, the web UI's flag: the map may not depend
// on what the model learned), and two methods whose maps disagree (Spearman's rho below
// kDisagreementRho and top-10% IoU below kDisagreementIou: they point at different evidence).
// `results`: [{"method", "randomisation": {"similarity"}}]; `agreement`: [{"a", "b", "spearman",
// "top_iou"}], as report.json holds them.
inline constexpr double kRandomisationFlag = 0.8, kDisagreementRho = 0.3, kDisagreementIou = 0.1;
nlohmann::json report_caveats(const nlohmann::json& results, const nlohmann::json& agreement);

// How the sentences write a number: 3 significant digits, as printf's %.3g.
std::string words_number(double v);

// The 3x3 part of an image a pixel (y, x) of an H x W map falls in: "top left", ..., "centre".
std::string words_region(int64_t cell_row, int64_t cell_col);

}  // namespace candela
