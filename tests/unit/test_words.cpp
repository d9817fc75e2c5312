// Explanations in words (candela/render/words.h): every number, rank and direction a sentence
// states is checked against the result it was made from, over the fixtures and several methods.
#include <functional>
#include <numeric>
#include <regex>

#include <gtest/gtest.h>

#include "candela/app/jobs.h"
#include "candela/io/npy.h"
#include "candela/methods/perturbation/feature_mask.h"
#include "candela/render/words.h"
#include "test_util.h"

namespace candela {
namespace {

using json = nlohmann::json;
using testing::fixture;
using testing::TempDir;

struct Result {
  json meta;
  at::Tensor values, inputs, training;  // training: the rows percentiles are taken among (tabular)
  at::Tensor other;                     // contrast: the attributions of the strongest other class
  std::vector<int64_t> other_class;
};

bool ends_with(const std::string& s, const std::string& e) { return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0; }

Result explain(const std::string& model, const std::string& input, const std::string& method, json options = json::object(),
               const std::string& target = "top1", const std::string& training = "", bool contrast = false) {
  ExplainJob job;
  job.model = fixture(model);
  job.input = fixture(input);
  job.method = method;
  job.options = std::move(options);
  job.target = target;
  if (!training.empty()) job.training_data = fixture(training);
  job.explain_in_words = contrast;
  const ExplainResult r = run(job);
  Result out;
  if (contrast) {
    // The strongest class other than the explained one, explained by a second, separate job.
    const at::Tensor output = r.attribution.output.detach().cpu();
    std::string classes;
    for (int64_t i = 0; i < output.size(0); ++i) {
      const at::Tensor top2 = std::get<1>(output[i].topk(2));
      const int64_t t = r.attribution.targets[static_cast<size_t>(i)];
      out.other_class.push_back(top2[0].item<int64_t>() == t ? top2[1].item<int64_t>() : top2[0].item<int64_t>());
      classes += (i ? "," : "") + std::to_string(out.other_class.back());
    }
    ExplainJob second = job;
    second.explain_in_words = false;
    second.target = classes;
    out.other = run(second).attribution.values.detach().cpu().to(at::kDouble);
  }
  if (!training.empty()) out.training = read_npy(fixture(training)).to(at::kDouble);
  for (const auto& a : r.artifacts)
    if (a.name == "attribution.json") out.meta = json::parse(a.bytes);
  out.values = r.attribution.values.detach().cpu().to(at::kDouble);
  if (ends_with(input, ".npy")) out.inputs = read_npy(fixture(input)).to(at::kDouble);
  return out;
}


// Every number written in the text is one of the sentence's values, written as words_number does.
void numbers_come_from_values(const json& sentence) {
  const std::string text = sentence["text"];
  std::vector<std::string> allowed;
  std::function<void(const json&)> collect = [&](const json& v) {
    if (v.is_number()) {
      allowed.push_back(words_number(v.get<double>()));
      if (v.is_number_integer()) allowed.push_back(std::to_string(v.get<int64_t>()));
    } else if (v.is_object() || v.is_array()) {
      for (const auto& e : v) collect(e);
    }
  };
  collect(sentence["values"]);
  if (sentence["kind"] == "warning") return;  // the engine's own message, quoted whole
  // Class labels say "class 3" and quote names; the numbers in names are the class's index.
  static const std::regex number(R"((^|[^\w.'])(-?\d+(\.\d+)?(e[-+]\d+)?))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), number); it != std::sregex_iterator(); ++it) {
    const std::string n = (*it)[2];
    EXPECT_NE(std::find(allowed.begin(), allowed.end(), n), allowed.end()) << "'" << n << "' in: " << text << "\nvalues: " << sentence["values"];
  }
}

std::vector<double> softmax(const json& row) {
  std::vector<double> p;
  double m = -1e300, z = 0;
  for (const auto& v : row) m = std::max(m, v.get<double>());
  for (const auto& v : row) z += std::exp(v.get<double>() - m);
  for (const auto& v : row) p.push_back(std::exp(v.get<double>() - m) / z);
  return p;
}

// The sentences' values against the result: prediction and runner-up from the output, features
// from the attributions and inputs, regions and concentration recomputed from the map.
void check(const Result& r) {
  ASSERT_TRUE(r.meta.contains("summary")) << r.meta.dump().substr(0, 300);
  const json& summary = r.meta["summary"];
  ASSERT_EQ(summary.size(), static_cast<size_t>(r.values.size(0)));
  for (const auto& sample : summary) {
    const int64_t i = sample["sample"];
    const json& out = r.meta["output"][i];
    const auto p = softmax(out);
    std::vector<int64_t> order(p.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return out[a].get<double>() > out[b].get<double>(); });
    int64_t features = 0, contrasts = 0;
    std::vector<int64_t> named;  // the feature indices or token positions the sentences named, in order
    ASSERT_FALSE(sample["sentences"].empty());
    for (const auto& s : sample["sentences"]) {
      numbers_come_from_values(s);
      const json& v = s["values"];
      const std::string kind = s["kind"];
      if (kind == "prediction") {
        EXPECT_EQ(v["class"], order[0]);
        EXPECT_NEAR(v["probability"].get<double>(), p[order[0]], 1e-12);
      } else if (kind == "runner_up") {
        EXPECT_EQ(v["class"], order[1]);
        EXPECT_NEAR(v["margin"].get<double>(), out[order[0]].get<double>() - out[order[1]].get<double>(), 1e-9);
      } else if (kind == "feature") {
        ++features;
        const int64_t j = v["index"];
        const double a = r.values[i][j].item<double>();
        EXPECT_NEAR(v["attribution"].get<double>(), std::abs(a), 1e-6 * (1 + std::abs(a)));
        EXPECT_EQ(v["direction"], a > 0 ? "raised" : "lowered");
        EXPECT_NEAR(v["value"].get<double>(), r.inputs[i][j].item<double>(), 1e-5 * (1 + std::abs(r.inputs[i][j].item<double>())));
        named.push_back(j);
        // Its rank: how many features have a larger |attribution|.
        const int64_t larger = (r.values[i].abs() > std::abs(a) * (1 + 1e-12)).sum().item<int64_t>();
        EXPECT_EQ(v["rank"].get<int64_t>(), larger + 1) << s["text"];
        // The value's percentile among the training rows: the share below, ties counted half.
        EXPECT_EQ(v.contains("percentile"), r.training.defined()) << s["text"];
        if (r.training.defined()) {
          const at::Tensor col = r.training.select(1, j);
          const double x = r.inputs[i][j].item<double>();
          const double p = 100.0 * ((col < x).sum().item<double>() + 0.5 * (col == x).sum().item<double>()) / col.size(0);
          EXPECT_NEAR(v["percentile"].get<double>(), p, 1e-9) << s["text"];
          const std::string text = s["text"];
          if (p >= 90) EXPECT_NE(text.find("above the 90th percentile"), std::string::npos) << text;
          else if (p <= 10) EXPECT_NE(text.find("below the 10th percentile"), std::string::npos) << text;
          else EXPECT_NE(text.find("at the " + std::to_string(std::llround(p))), std::string::npos) << text;
        }
      } else if (kind == "token") {
        // The token's text, position and |value| against tokens.json's rows and the values;
        // its rank among the non-special tokens.
        const json& toks = r.meta["tokens"][i]["tokens"];
        const int64_t pos = v["position"];
        named.push_back(pos);
        ASSERT_LT(pos, static_cast<int64_t>(toks.size()));
        EXPECT_EQ(v["token"], toks[pos]["token"]);
        EXPECT_GE(toks[pos]["word"].get<int64_t>(), 0) << "special tokens are not named: " << s["text"];
        const double a = r.values[i][pos].item<double>();
        EXPECT_NEAR(v["attribution"].get<double>(), std::abs(a), 1e-6 * (1 + std::abs(a)));
        EXPECT_EQ(v["direction"], a > 0 ? "raised" : "lowered");
        int64_t larger = 0;
        for (const auto& t : toks)
          larger += t["word"].get<int64_t>() >= 0 && std::abs(t["value"].get<double>()) > std::abs(a) * (1 + 1e-12);
        EXPECT_EQ(v["rank"].get<int64_t>(), larger + 1) << s["text"];
        EXPECT_NE(s["text"].get<std::string>().find("\"" + v["token"].get<std::string>() + "\""), std::string::npos);
        ++features;
      } else if (kind == "contrast") {
        // The strongest other class, and how each named feature moves it, against the second run.
        ++contrasts;
        ASSERT_TRUE(r.other.defined()) << s["text"];
        EXPECT_EQ(v["class"], r.other_class[static_cast<size_t>(i)]);
        ASSERT_EQ(v["features"].size(), named.size()) << s["text"];
        for (size_t k = 0; k < named.size(); ++k) {
          const double a = r.other[i][named[k]].item<double>();
          EXPECT_NEAR(v["features"][k]["attribution"].get<double>(), std::abs(a), 1e-5 * (1 + std::abs(a))) << s["text"];
          if (std::abs(a) > 1e-6) EXPECT_EQ(v["features"][k]["direction"], a > 0 ? "raised" : "lowered") << s["text"];
        }
      } else if (kind == "stability") {
        const json& st = r.meta["extra"]["prediction_stability"];
        EXPECT_EQ(v["changed"], st["changed"][i]);
        EXPECT_EQ(v["copies"], st["copies"]);
        EXPECT_EQ(v["caveat"].get<bool>(), v["changed"].get<int64_t>() > 0);
      } else if (kind == "region") {
        at::Tensor m = r.values[i];
        if (m.dim() == 3) m = m.sum(0);
        m = v["sign"] == "positive" ? m.clamp_min(0) : (-m).clamp_min(0);
        const int64_t h = m.size(0), w = m.size(1), row = v["row"], col = v["col"];
        const double cell = m.slice(0, row * h / 3, (row + 1) * h / 3).slice(1, col * w / 3, (col + 1) * w / 3).sum().item<double>();
        EXPECT_NEAR(v["percent"].get<double>(), 100 * cell / m.sum().item<double>(), 1e-9);
        for (int64_t rr = 0; rr < 3; ++rr)
          for (int64_t cc = 0; cc < 3; ++cc)
            EXPECT_LE(m.slice(0, rr * h / 3, (rr + 1) * h / 3).slice(1, cc * w / 3, (cc + 1) * w / 3).sum().item<double>(), cell + 1e-12)
                << "the named part holds the most";
        EXPECT_EQ(v["region"], words_region(row, col));
      } else if (kind == "completeness") {
        EXPECT_NEAR(v["delta"].get<double>(), r.meta["convergence_delta"][i].get<double>(), 1e-12);
        EXPECT_EQ(v["caveat"].get<bool>(), v["percent"].get<double>() > 5);
      }
    }
    if (r.meta.contains("features") || r.meta.contains("tokens")) EXPECT_GE(features, 1);
    EXPECT_EQ(contrasts, r.other.defined() && features > 0 ? 1 : 0);
  }
}

TEST(Words, EveryNumberMatchesTheResultOverFixturesAndMethods) {
  check(explain("breast_cancer_mlp.pt", "breast_cancer_test.npy", "integrated_gradients", {{"n_steps", 16}}));
  check(explain("breast_cancer_mlp.pt", "breast_cancer_test.npy", "saliency", json::object(), "0"));
  check(explain("breast_cancer_mlp.pt", "breast_cancer_test.npy", "input_x_gradient"));
  check(explain("digits_cnn.pt", "digits_test.npy", "integrated_gradients", {{"n_steps", 16}}));
  check(explain("digits_cnn.pt", "digit_0.png", "saliency"));
  check(explain("digits_cnn.pt", "digits_test.npy", "grad_cam"));
  check(explain("digits_cnn.pt", "digits_test.npy", "input_x_gradient", json::object(), "3"));
  check(explain("breast_cancer_mlp.pt", "breast_cancer_test.npy", "input_x_gradient", json::object(), "top1",
                "breast_cancer_train.npy", /*contrast=*/true));
  // A fixed class: the other class is the top one for the rows that predict the other.
  check(explain("breast_cancer_mlp.pt", "breast_cancer_test.npy", "saliency", json::object(), "1", "", true));
  check(explain("text_bert.pt", "text_test_lines.txt", "occlusion", json::object(), "top1", "", /*contrast=*/true));
  check(explain("text_bert.pt", "text_test_lines.txt", "layer_integrated_gradients", {{"layers", {"tok"}}, {"n_steps", 16}}));
}

// A row on the boundary between two classes flips under 1% noise in about half the copies; a
// row far from every boundary never does. Built from the linear fixture's weights: x0 ties the
// logits of 'a' and 'b' (its component along d = w_a - w_b is set by the biases), and a step
// orthogonal to d puts 'c' 5 logits below.
TEST(Words, StabilityCaveatOnABoundaryAndNoneFarFromIt) {
  const at::Tensor w = read_npy(fixture("linear_weight.npy")).to(at::kDouble);
  const at::Tensor b = read_npy(fixture("linear_bias.npy")).to(at::kDouble);
  ASSERT_EQ(w.size(0), 3);
  const at::Tensor d = w[0] - w[1], g = w[0] - w[2];
  const at::Tensor x0 = -(b[0] - b[1]) / d.dot(d) * d;
  const at::Tensor e = g - g.dot(d) / d.dot(d) * d;  // orthogonal to d
  const at::Tensor tie = x0 + (5 - (b[0] - b[2]) - g.dot(x0)) / g.dot(e) * e;
  const at::Tensor far = tie + 10 * d / d.norm();
  TempDir dir;
  const std::string rows = dir / "rows.npy";
  write_npy(rows, at::stack({tie, far}).to(at::kFloat));
  ExplainJob job;
  job.model = fixture("linear.pt");
  job.input = rows;
  job.method = "saliency";
  job.explain_in_words = true;  // the checks that cost model calls
  json meta;
  for (const auto& a : run(job).artifacts)
    if (a.name == "attribution.json") meta = json::parse(a.bytes);
  std::vector<json> stability;
  for (const auto& sample : meta["summary"])
    for (const auto& s : sample["sentences"])
      if (s["kind"] == "stability") stability.push_back(s);
  ASSERT_EQ(stability.size(), 2u) << meta["summary"].dump();
  // Each copy lands on either side of the tie: all 16 on one side has probability 2^-15.
  EXPECT_TRUE(stability[0]["values"]["caveat"].get<bool>()) << stability[0]["text"];
  EXPECT_GT(stability[0]["values"]["changed"].get<int64_t>(), 0);
  EXPECT_LT(stability[0]["values"]["changed"].get<int64_t>(), 16);
  EXPECT_EQ(stability[0]["text"].get<std::string>().rfind("Caveat:", 0), 0u);
  EXPECT_NE(stability[0]["text"].get<std::string>().find("'"), std::string::npos) << "names the other class";
  // 10 logits of margin against noise of 1% of each value: never flips.
  EXPECT_EQ(stability[1]["values"]["changed"].get<int64_t>(), 0) << stability[1]["text"];
  EXPECT_FALSE(stability[1]["values"]["caveat"].get<bool>());
  numbers_come_from_values(stability[0]);
  numbers_come_from_values(stability[1]);
}

// A linear model's input x gradient with inputs of ones is its weight row: the summary names the
// features of largest |weight| in order, with the weight's sign as the direction.
TEST(Words, LinearModelNamesItsLargestWeightsInOrder) {
  const at::Tensor w = read_npy(fixture("linear_weight.npy")).to(at::kDouble);
  TempDir dir;
  const std::string ones = dir / "ones.npy";
  write_npy(ones, at::ones({1, w.size(1)}));
  ExplainJob job;
  job.model = fixture("linear.pt");
  job.input = ones;
  job.method = "input_x_gradient";
  job.target = "1";
  json meta;
  for (const auto& a : run(job).artifacts)
    if (a.name == "attribution.json") meta = json::parse(a.bytes);
  const at::Tensor row = w[1].abs();
  const at::Tensor order = std::get<1>(row.sort(0, /*descending=*/true));
  int64_t rank = 0;
  for (const auto& s : meta["summary"][0]["sentences"]) {
    if (s["kind"] != "feature") continue;
    const int64_t j = s["values"]["index"];
    EXPECT_EQ(j, order[rank].item<int64_t>()) << s["text"];
    EXPECT_EQ(s["values"]["direction"], w[1][j].item<double>() > 0 ? "raised" : "lowered");
    EXPECT_NE(s["text"].get<std::string>().find("score of 'b'"), std::string::npos) << s["text"];
    ++rank;
  }
  EXPECT_EQ(rank, std::min<int64_t>(3, w.size(1)));
}

// The report's caveats: exactly the figures past their thresholds, each sentence stating its
// numbers; nulls (figures that could not be computed) and errors say nothing.
TEST(Words, ReportCaveatsNameTheFiguresPastTheirThresholds) {
  const json results = json::array({{{"method", "saliency"}, {"randomisation", {{"similarity", 0.93}}}},
                                    {{"method", "grad_cam"}, {"randomisation", {{"similarity", 0.2}}}},
                                    {{"method", "occlusion"}, {"randomisation", {{"error", "a plain function"}}}},
                                    {{"method", "lime"}}});
  const json agreement = json::array({{{"a", "saliency"}, {"b", "grad_cam"}, {"spearman", 0.12}, {"top_iou", 0.04}},
                                      {{"a", "saliency"}, {"b", "occlusion"}, {"spearman", 0.12}, {"top_iou", 0.5}},
                                      {{"a", "grad_cam"}, {"b", "occlusion"}, {"spearman", 0.7}, {"top_iou", 0.0}},
                                      {{"a", "grad_cam"}, {"b", "lime"}, {"spearman", nullptr}, {"top_iou", nullptr}}});
  const json caveats = report_caveats(results, agreement);
  ASSERT_EQ(caveats.size(), 2u) << caveats.dump(1);
  EXPECT_EQ(caveats[0]["kind"], "randomisation");
  EXPECT_EQ(caveats[0]["values"]["method"], "saliency");
  EXPECT_EQ(caveats[1]["kind"], "disagreement");
  EXPECT_EQ(caveats[1]["values"]["b"], "grad_cam");
  for (const auto& c : caveats) {
    numbers_come_from_values(c);
    EXPECT_EQ(c["text"].get<std::string>().rfind("Caveat: ", 0), 0u);
  }
  EXPECT_NE(caveats[0]["text"].get<std::string>().find("0.93"), std::string::npos);
  EXPECT_NE(caveats[1]["text"].get<std::string>().find("0.04"), std::string::npos);
}

// Attributions to image segments: the sentence names the segment with the largest positive sum,
// its area (a 2x2 cell of an 8x8 image is 6.25% of it) and the part of the image its centre is in.
TEST(Words, TheSegmentHoldingTheMostEvidenceIsNamed) {
  ExplainJob job;
  job.model = fixture("digits_cnn.pt");
  job.input = fixture("digit_0.png");
  job.method = "feature_ablation";
  job.features = "grid:2";
  ExplainContext context;
  const ExplainResult r = run(job, RunControl{}, &context);
  json meta;
  for (const auto& a : r.artifacts)
    if (a.name == "attribution.json") meta = json::parse(a.bytes);
  const at::Tensor mask = make_feature_mask("grid:2", context.request.inputs, context.model->input_spec(), context.input.display);
  const at::Tensor p = r.attribution.values.detach().cpu().to(at::kDouble)[0].sum(0).clamp_min(0);
  const at::Tensor ids = mask[0][0];
  int64_t best = -1;
  double best_sum = -1;
  for (int64_t id = ids.min().item<int64_t>(); id <= ids.max().item<int64_t>(); ++id) {
    const double sum = p.masked_select(ids == id).sum().item<double>();
    if (sum > best_sum) best_sum = sum, best = id;
  }
  int64_t segments = 0;
  for (const auto& s : meta["summary"][0]["sentences"]) {
    if (s["kind"] != "segment") continue;
    ++segments;
    numbers_come_from_values(s);
    EXPECT_EQ(s["values"]["id"].get<int64_t>(), best) << s["text"];
    EXPECT_NEAR(s["values"]["percent"].get<double>(), 100 * best_sum / p.sum().item<double>(), 1e-9);
    EXPECT_DOUBLE_EQ(s["values"]["area_percent"].get<double>(), 6.25);
    const at::Tensor where = (ids == best).nonzero().to(at::kDouble).mean(0);
    EXPECT_EQ(s["values"]["region"], words_region(static_cast<int64_t>(where[0].item<double>() * 3 / 8),
                                                  static_cast<int64_t>(where[1].item<double>() * 3 / 8)));
    EXPECT_EQ(s["text"].get<std::string>().rfind("Grid cell ", 0), 0u) << s["text"];
  }
  EXPECT_EQ(segments, 1);
}

TEST(Words, NumbersAndRegionsAreWrittenOneWay) {
  EXPECT_EQ(words_number(0.123456), "0.123");
  EXPECT_EQ(words_number(25.3), "25.3");
  EXPECT_EQ(words_number(-1234.5), "-1.23e+03");
  EXPECT_EQ(words_region(0, 0), "top left");
  EXPECT_EQ(words_region(1, 1), "centre");
  EXPECT_EQ(words_region(2, 1), "bottom centre");
}

}  // namespace
}  // namespace candela
