// The app layer (candela/app/jobs.h): jobs as data, one run() per job. This file includes the
// umbrella header first and alone, so it also proves candela.h compiles by itself.
#include "candela/candela.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::TempDir;

namespace {
#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST(Jobs, FromJsonChecksFieldsAndTypesAndRoundTrips) {
  auto job = job_from_json<ExplainJob>(
      {{"model", "m.pt"}, {"input", "x.npy"}, {"method", "saliency"}, {"options", {{"abs", false}}},
       {"layers", {"layer4"}}, {"max_memory", 256}, {"input_shape", "3,8,8"}},
      "the explain request");
  EXPECT_EQ(job.method, "saliency");
  EXPECT_EQ(job.options["abs"], false);
  EXPECT_EQ(job.layers, std::vector<std::string>{"layer4"});
  EXPECT_EQ(job.budget.max_memory, 256);
  EXPECT_EQ(job.spec.input_shape, "3,8,8");
  EXPECT_EQ(job.target, "top1") << "unset fields keep their defaults";
  EXPECT_EQ(job_to_json(job_from_json<ExplainJob>(job_to_json(job), "x")), job_to_json(job));

  const std::string unknown = error_of([] { job_from_json<ExplainJob>({{"methd", "saliency"}}, "the explain request"); });
  EXPECT_CONTAINS(unknown, "unknown field 'methd' in the explain request");
  EXPECT_CONTAINS(unknown, "'method'");
  EXPECT_CONTAINS(error_of([] { job_from_json<EvaluateJob>({{"chunk", "eight"}}, "r"); }), "'chunk' expects");
  EXPECT_CONTAINS(error_of([] { job_from_json<InfoJob>(nlohmann::json::array(), "the info request"); }),
                  "the info request must be a JSON object");

  // The schema lists every field once, with its default: what a server or Python shows.
  const auto schema = job_schema<EvaluateJob>();
  EXPECT_EQ(schema["chunk"]["default"], 8);
  EXPECT_EQ(schema["max_memory"]["default"], EvalOptions{}.max_memory_mb);
  EXPECT_TRUE(schema.contains("layout"));
}

TEST(Jobs, OneKeyValueParserTypedByTheSchema) {
  const auto& schema = Registry::builtin().get("integrated_gradients").schema;
  auto o = key_value_options({"n_steps=16", "method=riemann_left"}, schema, "integrated_gradients", "--option");
  EXPECT_EQ(o["n_steps"], 16);
  EXPECT_EQ(o["method"], "riemann_left");
  EXPECT_CONTAINS(error_of([&] { key_value_options({"n_steps"}, schema, "integrated_gradients", "--option"); }),
                  "--option takes KEY=VALUE, got 'n_steps'");
  EXPECT_CONTAINS(error_of([&] { key_value_options({"n_steps=1", "n_steps=2"}, schema, "integrated_gradients", "--option"); }),
                  "given twice");
  auto named = named_key_value_options({"integrated_gradients.n_steps=8", "saliency.abs=false"}, false);
  EXPECT_EQ(named["integrated_gradients"]["n_steps"], 8);
  EXPECT_EQ(named["saliency"]["abs"], false);
  EXPECT_CONTAINS(error_of([] { named_key_value_options({"road=1"}, true); }), "--metric-option takes NAME.KEY=VALUE");
}

TEST(Jobs, ExplainWithoutAFolderReturnsTheFilesItWouldWrite) {
  TempDir dir;
  ExplainJob job;
  job.model = fixture("digits_cnn.pt");
  job.input = fixture("digits_test.npy");
  job.method = "saliency";
  std::vector<std::string> notes;
  RunControl control;
  control.note = [&](const std::string& n) { notes.push_back(n); };
  int64_t progress_calls = 0;
  control.progress = [&](const Progress&) { ++progress_calls; };
  ExplainResult r = run(job, control);
  ASSERT_TRUE(r.files.empty());
  std::vector<std::string> names;
  for (const auto& a : r.artifacts) names.push_back(a.name);
  EXPECT_EQ(names.front(), "attributions.npy");
  EXPECT_EQ(names.back(), "attribution.json");
  EXPECT_EQ(r.artifacts.back().media_type, "application/json");
  EXPECT_EQ(r.attribution.values.size(0), read_npy(job.input).size(0));
  EXPECT_GT(progress_calls, 0);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 0);

  // With a folder, the same bytes land there, and nothing else.
  job.out = dir / "out";
  ExplainResult w = run(job, control);
  ASSERT_EQ(w.files.size(), w.artifacts.size());
  for (size_t i = 0; i < w.files.size(); ++i) {
    EXPECT_EQ(std::filesystem::path(w.files[i]).filename(), w.artifacts[i].name);
    EXPECT_EQ(read_file(w.files[i], 1 << 26), w.artifacts[i].bytes) << w.files[i];
  }

  // Cheap checks come before the model loads: a missing model file is not what they report.
  job.model = "/nonexistent/model.pt";
  job.method = "saliency";
  job.baseline = "constant:0.5";
  EXPECT_CONTAINS(error_of([&] { run(job); }), "saliency does not use a baseline");
  job.baseline.clear();
  job.layers = {"features.0"};
  EXPECT_CONTAINS(error_of([&] { run(job); }), "saliency takes no layer");
}

TEST(Jobs, CancelledBeforeTheFirstBatchWritesNothing) {
  TempDir dir;
  ExplainJob job;
  job.model = fixture("digits_cnn.pt");
  job.input = fixture("digits_test.npy");
  job.method = "integrated_gradients";
  job.out = dir / "out";
  RunControl control;
  control.cancel.cancel();
  EXPECT_THROW(run(job, control), Cancelled);
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));
}

TEST(Jobs, ValidateRefusesWhatRunRefusesWithoutLoadingTheModel) {
  ExplainJob job;
  job.model = "/nonexistent/model.pt";  // never opened: validate() loads nothing
  job.input = "/nonexistent/input.npy";
  job.method = "integrated_gradients";
  EXPECT_NO_THROW(validate(job));
  job.options = {{"n_steps", -3}};
  const std::string steps = error_of([&] { validate(job); });
  EXPECT_CONTAINS(steps, "n_steps must be at least 1");
  EXPECT_EQ(steps, error_of([&] { run(job); }));  // the same message as the run
  job.options = nlohmann::json::object();
  job.method = "saliency";
  job.layers = {"features.2"};
  EXPECT_CONTAINS(error_of([&] { validate(job); }), "saliency takes no layer");
  job.layers.clear();
  job.method = "integrated_gradient";
  EXPECT_CONTAINS(error_of([&] { validate(job); }), "Did you mean 'integrated_gradients'");

  EvaluateJob e;
  e.methods = {"saliency"};
  e.metrics = {"sparseness"};
  EXPECT_NO_THROW(validate(e));
  e.metrics = {"sparsenes"};
  EXPECT_CONTAINS(error_of([&] { validate(e); }), "sparseness");
}

TEST(Jobs, PredictGivesTheTopClassesBestFirst) {
  PredictJob job;
  job.model = fixture("digits_cnn.pt");
  job.input = fixture("digits_test.npy");
  job.top_k = 3;
  const nlohmann::json p = run(job);
  EXPECT_EQ(p["output_kind"], "logits");
  EXPECT_EQ(p["classes"], 10);
  const at::Tensor x = read_npy(fixture("digits_test.npy"));
  ASSERT_EQ(p["samples"].size(), static_cast<size_t>(x.size(0)));
  Model model = Model::load(fixture("digits_cnn.pt"));
  const at::Tensor probs = model.forward(x).softmax(1);
  for (size_t i = 0; i < p["samples"].size(); ++i) {
    const auto& top = p["samples"][i]["top"];
    ASSERT_EQ(top.size(), 3u);
    EXPECT_EQ(top[0]["class"].get<int64_t>(), probs[static_cast<int64_t>(i)].argmax().item<int64_t>());
    EXPECT_NEAR(top[0]["score"].get<double>(), probs[static_cast<int64_t>(i)].max().item<double>(), 1e-5);
    EXPECT_GE(top[0]["score"].get<double>(), top[1]["score"].get<double>());
    EXPECT_GE(top[1]["score"].get<double>(), top[2]["score"].get<double>());
  }
  job.top_k = 0;
  EXPECT_CONTAINS(error_of([&] { run(job); }), "top_k must be >= 1");
}

TEST(Jobs, InfoListsLayersWithShapes) {
  InfoJob job;
  job.model = fixture("digits_cnn.pt");
  const nlohmann::json info = run(job);
  EXPECT_EQ(info["output_shape"], (std::vector<int64_t>{1, 10}));
  bool found = false;
  for (const auto& l : info["layers"])
    if (l["name"] == "features.0") {
      found = true;
      EXPECT_EQ(l["output_shape"], (std::vector<int64_t>{1, 8, 8, 8}));
    }
  EXPECT_TRUE(found) << info.dump();
  job.spec.input_shape = "1,x";
  EXPECT_CONTAINS(error_of([&] { run(job); }), "--input-shape must be comma-separated integers");
}

TEST(Jobs, DatasetLoadingKeepsTheFirstSamplesAndChecksLabels) {
  TempDir dir;
  const at::Tensor x = at::rand({5, 4});
  write_npy(dir / "x.npy", x);
  write_npy(dir / "labels.npy", at::tensor({0.0, 1.0, 1.0, 0.0, 1.0}));
  write_npy(dir / "bad.npy", at::tensor({0.5, 1.0, 1.0, 0.0, 1.0}));
  InputSpec spec;
  spec.shape = {4};
  spec.layout = "NC";
  Dataset d = load_dataset(dir / "x.npy", dir / "labels.npy", "", spec, 3);
  EXPECT_TRUE(at::equal(d.inputs, x.slice(0, 0, 3)));
  EXPECT_TRUE(at::equal(d.labels, at::tensor({0, 1, 1}, at::kLong)));
  EXPECT_CONTAINS(error_of([&] { load_dataset(dir / "x.npy", dir / "bad.npy", "", spec); }),
                  "must hold integer class indices");
  EXPECT_CONTAINS(error_of([&] { load_dataset(dir / "missing", "", "", spec); }), "no such file or folder");
}

TEST(Errors, AnInternalCheckIsABugReportWithItsLocation) {
  try {
    const int rows = 0;
    CANDELA_ASSERT(rows > 0, "rows = ", rows);
    FAIL() << "CANDELA_ASSERT did not throw";
  } catch (const InternalError& e) {
    EXPECT_CONTAINS(e.what(), "internal check failed: rows > 0");
    EXPECT_CONTAINS(e.what(), "test_app.cpp:");
    EXPECT_CONTAINS(e.what(), "rows = 0");
  }
  // User errors stay apart: an InternalError is not an InvalidArgument.
  EXPECT_THROW(CANDELA_CHECK(false, "bad flag"), InvalidArgument);
}

// Methods and metrics share one catalogue: the same duplicate check and the same unknown-name hint.
TEST(Catalogs, MethodsAndMetricsRefuseDuplicatesAndSuggestNames) {
  Registry methods;
  methods.add(Registry::builtin().get("saliency"));
  EXPECT_THROW(methods.add(Registry::builtin().get("saliency")), InternalError);
  MetricRegistry metrics;
  metrics.add(MetricRegistry::builtin().get("deletion"));
  EXPECT_THROW(metrics.add(MetricRegistry::builtin().get("deletion")), InternalError);
  const std::string m = error_of([] { Registry::builtin().get("salency"); });
  EXPECT_CONTAINS(m, "unknown method 'salency'");
  EXPECT_CONTAINS(m, "'saliency'");
  EXPECT_CONTAINS(m, "candela methods");
  const std::string k = error_of([] { MetricRegistry::builtin().get("delition"); });
  EXPECT_CONTAINS(k, "unknown metric 'delition'");
  EXPECT_CONTAINS(k, "'deletion'");
  EXPECT_CONTAINS(k, "candela metrics");
}

// A method's facts live in its class (kTraits); the registry reads them from there, and options
// are validated when the method is made.
TEST(Methods, DeclaredOnceWithTheirFacts) {
  GradCam cam({.layers = {"layer4"}, .relu = false});
  EXPECT_EQ(cam.name(), "grad_cam");
  EXPECT_EQ(cam.options()["layers"], std::vector<std::string>{"layer4"});
  EXPECT_EQ(cam.options()["relu"], false);
  IntegratedGradients ig({.n_steps = 7});
  EXPECT_EQ(ig.options()["n_steps"], 7);
  EXPECT_TRUE(ig.uses_baseline());
  EXPECT_FALSE(Saliency().uses_baseline());
  EXPECT_THROW(IntegratedGradients({.n_steps = 0}), InvalidArgument);
  const MethodInfo& info = Registry::builtin().get(IntegratedGradients::kTraits.name);
  EXPECT_EQ(info.description, IntegratedGradients::kTraits.description);
  EXPECT_EQ(info.family, "gradient");
  EXPECT_TRUE(info.completeness);
  EXPECT_FALSE(Registry::builtin().get(EigenCam::kTraits.name).uses_target);
  EXPECT_EQ(info.schema, options_schema<IntegratedGradients::Options>());
}

TEST(UmbrellaHeader, IncludesEveryPublicHeader) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(CANDELA_SOURCE_DIR) / "include";
  std::ifstream in(root / "candela" / "candela.h");
  const std::string umbrella((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(umbrella.empty());
  int headers = 0;
  for (const auto& e : fs::recursive_directory_iterator(root / "candela")) {
    if (e.path().extension() != ".h" || e.path().filename() == "candela.h") continue;
    ++headers;
    const std::string name = fs::relative(e.path(), root).generic_string();
    EXPECT_CONTAINS(umbrella, "#include \"" + name + "\"") << "add it to include/candela/candela.h";
  }
  EXPECT_GT(headers, 50);
}

namespace {
// A metric declared as the built-in ones are: its facts once, in kTraits.
struct ToyOptions {
  double scale = 1.0;
  template <class V> void visit(V& v) { v("scale", scale, "Multiplies the score."); }
  void validate() const { CANDELA_CHECK(scale > 0, "scale must be > 0."); }
};
class ToyMetric : public MetricWith<ToyMetric, ToyOptions> {
 public:
  static constexpr MetricTraits kTraits{.name = "toy",
                                        .family = "complexity",
                                        .description = "Sum of |attributions| times scale.",
                                        .reference = "none",
                                        .higher_is_better = false,
                                        .needs_masks = true};
  using MetricWith::MetricWith;
  at::Tensor score(const MetricInput& in, nlohmann::json*) const override {
    return in.attributions.abs().flatten(1).sum(1).to(at::kDouble) * o_.scale;
  }
};
}  // namespace

TEST(Metrics, DeclaredOnceWithTheirFacts) {
  MetricRegistry r;
  r.add<ToyMetric>();
  const MetricInfo& info = r.get("toy");
  EXPECT_EQ(info.family, "complexity");
  EXPECT_EQ(info.description, ToyMetric::kTraits.description);
  EXPECT_TRUE(info.needs_masks);
  EXPECT_FALSE(info.needs_explainer);
  EXPECT_EQ(info.schema, options_schema<ToyOptions>());
  auto m = r.create("toy", {{"scale", 2.0}});
  EXPECT_EQ(m->name(), "toy");
  EXPECT_FALSE(m->higher_is_better());
  EXPECT_EQ(m->options()["scale"], 2.0);
  MetricInput in;
  in.attributions = at::tensor({1.0, -2.0, 0.5, 0.5}).view({2, 2});
  EXPECT_TRUE(at::allclose(m->score(in), at::tensor({6.0, 2.0}, at::kDouble)));
  EXPECT_THROW(r.create("toy", {{"scale", -1.0}}), InvalidArgument);
  EXPECT_THROW(r.add<ToyMetric>(), InternalError) << "a second metric with the same name";
}

TEST(Jobs, RobustnessAndCounterfactualJobsFromJson) {
  auto rj = job_from_json<RobustnessJob>({{"model", "m.pt"}, {"data", "x.npy"}, {"attack", "pgdl2"}, {"eps", 0.5},
                                          {"random_start", false}, {"eps_curve", {0, 0.25, 0.5}}, {"search_steps", 0}},
                                         "the robustness request");
  EXPECT_EQ(rj.options.attack.attack, "pgdl2");
  EXPECT_EQ(rj.options.attack.eps, 0.5);
  EXPECT_FALSE(rj.options.attack.random_start);
  EXPECT_EQ(rj.options.eps_curve, (std::vector<double>{0, 0.25, 0.5}));
  EXPECT_EQ(job_to_json(job_from_json<RobustnessJob>(job_to_json(rj), "x")), job_to_json(rj));
  EXPECT_CONTAINS(error_of([] { job_from_json<RobustnessJob>({{"attack", "cw"}}, "the robustness request"); }),
                  "must be one of fgsm, pgd, pgdl2, deepfool");
  const auto schema = job_schema<CounterfactualJob>();
  EXPECT_EQ(schema["proximity_weight"]["default"], 0.5);  // DiCE's defaults
  EXPECT_EQ(schema["diversity_weight"]["default"], 1.0);
  EXPECT_EQ(schema["learning_rate"]["default"], 0.05);
  EXPECT_EQ(schema["target"]["default"], "opposite");
  EXPECT_CONTAINS(error_of([] {
                    CounterfactualJob j;
                    j.model = "m.pt";
                    j.input = "x.csv";
                    run(j);
                  }),
                  "--background");
}
