// The `candela` command: flags -> a job (candela/app/jobs.h) -> printing. The work is in the library.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cstdio>
#include <cstring>
#include <vector>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "candela/app/server.h"
#include "candela/candela.h"

namespace {

// Ctrl-C (SIGINT) and SIGTERM cancel the running job: the evaluator stops at its next batch,
// nothing half-written is left behind, and the command exits 130. A second signal kills at once.
candela::CancelToken g_interrupt;
void on_interrupt(int) { g_interrupt.cancel(); }
void cancel_on_interrupt() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}


using namespace candela;

// Flags from a struct's visit(), as job_from_json reads its fields: "input_shape" becomes
// --input-shape, described as the field is.
struct FlagAdder {
  CLI::App* app;
  template <class T>
  void operator()(const char* key, T& value, const char* description, std::vector<std::string> = {}) {
    std::string flag = std::string("--") + key, help = description;
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (!help.empty() && help.back() == '.') help.pop_back();
    app->add_option(flag, value, help);
  }
};
template <class Fields>
void add_flags(CLI::App* app, Fields& fields) {
  FlagAdder adder{app};
  fields.visit(adder);
}
// Flags that describe the model's input, shared by every command that loads a model.
void add_spec_flags(CLI::App* app, SpecOverrides& s) { add_flags(app, s); }
// --max-memory and --batch-size, shared by every command that runs the model.
void add_budget_flags(CLI::App* app, Budget& b) { add_flags(app, b); }

void print_note(const std::string& note) { std::cerr << "candela: " << note << "\n"; }

std::string duration(double s) {
  if (s < 0) return "?";
  std::ostringstream o;
  if (s >= 3600) o << static_cast<int>(s / 3600) << "h";
  if (s >= 60) o << static_cast<int>(std::fmod(s, 3600) / 60) << "m";
  o << static_cast<int>(std::fmod(s, 60)) << "s";
  return o.str();
}

// A one-line progress bar on stderr, only when stderr is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled && isatty(STDERR_FILENO)) {}
  ~ProgressBar() { finish(); }
  // Per batch of model evaluations (explain, audit).
  ProgressCallback callback() {
    if (!enabled_) return {};
    return [this](const Progress& p) { draw(p.stage, p.done, p.total, ""); };
  }
  // Per unit of work, with the time spent and the time left (evaluate).
  std::function<void(const EvaluateProgress&)> evaluate_callback() {
    if (!enabled_) return {};
    return [this](const EvaluateProgress& p) {
      draw(p.stage, p.done, p.total,
           "  elapsed " + duration(p.elapsed_seconds) + "  left " + duration(p.remaining_seconds) + "   ");
    };
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\r%100s\r", "");
    drawn_ = false;
  }

 private:
  void draw(const std::string& stage, int64_t done, int64_t total, const std::string& tail) {
    auto now = std::chrono::steady_clock::now();
    if (done != total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int width = 30;
    const double frac = total > 0 ? static_cast<double>(done) / total : 0.0;
    const int fill = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r%-34.34s [%s%s] %3d%% %lld/%lld%s", stage.c_str(), std::string(fill, '#').c_str(),
                 std::string(width - fill, '.').c_str(), static_cast<int>(frac * 100), (long long)done,
                 (long long)total, tail.c_str());
    std::fflush(stderr);
    drawn_ = true;
  }
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return "[" + s + "]";
}

// A job that runs one method, with the method's options given as --option KEY=VALUE.
template <class Job>
struct MethodArgs {
  Job job;
  std::vector<std::string> options;
  bool quiet = false;
  Job& resolved() {
    job.options = key_value_options(options, Registry::builtin().get(job.method).schema, job.method, "--option");
    return job;
  }
};

// Ctrl-C cancels; notes (an inferred layout) go to stderr.
RunControl cli_control() {
  RunControl control;
  control.cancel = g_interrupt;
  control.note = print_note;
  return control;
}

int run_explain(MethodArgs<ExplainJob>& args, bool in_words) {
  ExplainJob job = args.resolved();
  job.explain_in_words = job.explain_in_words || in_words;  // the words' checks that cost model calls
  ProgressBar bar(!args.quiet);
  RunControl control = cli_control();
  control.progress = bar.callback();
  ExplainResult r = run(job, control);
  bar.finish();
  const Attribution& a = r.attribution;
  for (const auto& w : a.warnings) std::cerr << "candela: warning: " << w["message"].get<std::string>() << "\n";
  if (!args.quiet) {
    std::cout << job.method << ": " << a.model_evaluations << " model evaluations in " << std::fixed
              << std::setprecision(2) << a.wall_seconds << " s";
    if (a.convergence_delta.defined())
      std::cout << ", max |convergence delta| " << std::scientific << std::setprecision(2)
                << a.convergence_delta.abs().max().item<double>();
    std::cout << "\n";
    for (const auto& f : r.files) std::cout << "  wrote " << f << "\n";
    // Token models: the highlighted text, when a terminal shows colours.
    if (isatty(STDOUT_FILENO))
      for (const auto& art : r.artifacts)
        if (art.name == "tokens.json") std::cout << render_tokens_ansi(nlohmann::json::parse(art.bytes));
  }
  if (in_words) {
    const nlohmann::json meta = nlohmann::json::parse(read_file(job.out + "/attribution.json", 1 << 28));
    for (const auto& sample : meta["summary"]) {
      std::cout << "sample " << sample["sample"].get<int64_t>() << ":\n";
      for (const auto& sentence : sample["sentences"]) std::cout << "  " << sentence["text"].get<std::string>() << "\n";
    }
  }
  return 0;
}

// ---- report --------------------------------------------------------------------------------

struct ReportArgs {
  ReportJob job;
  std::vector<std::string> method_options;  // NAME.KEY=VALUE
  bool no_randomisation = false, quiet = false;
};

int run_report(ReportArgs& a) {
  ReportJob& job = a.job;
  job.method_options = named_key_value_options(a.method_options, false);
  job.randomisation = !a.no_randomisation;
  ProgressBar bar(!a.quiet);
  RunControl control = cli_control();
  control.progress = bar.callback();
  ReportResult r = run(job, control);
  bar.finish();
  if (!a.quiet) {
    for (const auto& s : r.data["samples"])
      for (const auto& res : s["results"])
        for (const auto& w : res["attribution"].value("warnings", nlohmann::json::array()))
          std::cerr << "candela: warning: " << res["method"].get<std::string>() << ": " << w.value("message", "") << "\n";
    for (const auto& f : r.files) std::cout << "wrote " << f << "\n";
  }
  return 0;
}

// ---- evaluate, metrics, audit -------------------------------------------------------------

struct EvaluateArgs {
  EvaluateJob job;
  std::vector<std::string> method_options, metric_options;  // NAME.KEY=VALUE
  bool quiet = false;
};

int run_evaluate(EvaluateArgs& a) {
  EvaluateJob& job = a.job;
  job.method_options = named_key_value_options(a.method_options, false);
  job.metric_options = named_key_value_options(a.metric_options, true);
  ProgressBar bar(!a.quiet);
  RunControl control = cli_control();
  control.evaluate_progress = bar.evaluate_callback();
  run(job, control);
  bar.finish();
  if (!a.quiet) {
    std::cout << read_file(job.out + "/summary.md", 1 << 22);
    std::cout << "wrote " << job.out << "/results.csv, results.json, summary.md\n";
  }
  return 0;
}

struct RecommendArgs {
  RecommendJob job;
  std::vector<std::string> method_options;  // NAME.KEY=VALUE
  bool json = false, quiet = false;
};

int run_recommend(RecommendArgs& a) {
  RecommendJob& job = a.job;
  job.method_options = named_key_value_options(a.method_options, false);
  ProgressBar bar(!a.quiet);
  RunControl control = cli_control();
  control.evaluate_progress = bar.evaluate_callback();
  RecommendResult r = run(job, control);
  bar.finish();
  if (a.json) {
    std::cout << r.report.dump(2) << "\n";
  } else if (!a.quiet) {
    std::cout << recommend_text(r.report);
    if (!r.files.empty()) std::cout << "wrote " << job.out << "/recommend.json, recommend.md, results.csv\n";
  }
  return 0;
}

int run_metrics(bool json) {
  const auto& reg = MetricRegistry::builtin();
  if (json) {
    std::cout << reg.to_json().dump(2) << "\n";
    return 0;
  }
  for (const auto& m : reg.metrics()) {
    std::cout << m.name << "  (" << m.family << (m.needs_masks ? ", needs --masks" : "")
              << (m.needs_explainer ? ", explains again" : "") << ")\n    " << m.description << "\n    " << m.reference
              << "\n";
    for (const auto& [key, field] : m.schema.items())
      std::cout << "    --metric-option " << m.name << "." << key << "=" << field["default"].dump() << "  "
                << field["description"].get<std::string>() << "\n";
    std::cout << "\n";
  }
  return 0;
}

int run_audit(MethodArgs<AuditJob>& a) {
  const AuditJob& job = a.resolved();
  ProgressBar bar(!a.quiet);
  RunControl control = cli_control();
  control.progress = bar.callback();
  nlohmann::json r = run(job, control);
  bar.finish();
  if (!a.quiet) {
    std::cout << (r["suspected"].get<bool>() ? "SUSPECTED SHORTCUT: " : "no shortcut found: ")
              << r["evidence"].get<std::string>() << "\nwrote " << job.out << "/audit.json\n";
  }
  return 0;
}

// A job whose flags are its fields, and --quiet.
template <class Job>
struct JobArgs {
  Job job;
  bool quiet = false;
};

// Runs the job with a progress bar (unless --quiet), Ctrl-C cancelling it.
template <class Job>
auto run_with_progress(JobArgs<Job>& a) {
  ProgressBar bar(!a.quiet);
  RunControl control = cli_control();
  control.progress = bar.callback();
  auto r = run(a.job, control);
  bar.finish();
  return r;
}

using RobustnessArgs = JobArgs<RobustnessJob>;
using CounterfactualArgs = JobArgs<CounterfactualJob>;

int run_robustness(RobustnessArgs& a) {
  RobustnessJobResult r = run_with_progress(a);
  if (!a.quiet) {
    const nlohmann::json& rep = r.result.report;
    const nlohmann::json& s = rep["summary"];
    std::cout << rep["attack"]["attack"].get<std::string>() << " eps " << rep["attack"]["eps"].get<double>()
              << ": clean accuracy " << s["clean_accuracy"].get<double>() << ", robust accuracy "
              << s["robust_accuracy"].get<double>() << " (" << s["samples"].get<int64_t>() << " samples)\n";
    std::cout << "robust accuracy by eps:";
    for (const auto& p : rep["curve"])
      std::cout << "  " << p["eps"].get<double>() << ": " << p["robust_accuracy"].get<double>();
    std::cout << "\n";
    if (s.contains("min_eps_median") && !s["min_eps_median"].is_null())
      std::cout << "median minimal flipping eps (" << s["min_eps_norm"].get<std::string>()
                << "): " << s["min_eps_median"].get<double>() << "\n";
    for (const auto& f : r.files) std::cout << "  wrote " << f << "\n";
  }
  return 0;
}

int run_counterfactual(CounterfactualArgs& a) {
  CounterfactualJobResult r = run_with_progress(a);
  if (!a.quiet) {
    const nlohmann::json& s = r.result.report["summary"];
    if (!s.contains("count")) {  // images
      std::cout << "image counterfactuals: " << s["rows"].get<int64_t>() << " images; validity "
                << s["validity"].get<double>() << ", mean |change| per pixel " << s["proximity_l1"].get<double>()
                << ", sparsity " << s["sparsity"].get<double>() << "\n";
      for (const auto& f : r.files) std::cout << "  wrote " << f << "\n";
      return 0;
    }
    std::cout << a.job.options.method << ": " << s["rows"].get<int64_t>() << " rows x " << s["count"].get<int64_t>()
              << " counterfactuals; validity " << s["validity"].get<double>() << ", proximity "
              << s["proximity"].get<double>() << ", sparsity " << s["sparsity"].get<double>() << "\n";
    for (const auto& f : r.files) std::cout << "  wrote " << f << "\n";
  }
  return 0;
}

using RefineArgs = JobArgs<RefineJob>;

int run_refine(RefineArgs& a) {
  RunControl control = cli_control();
  if (!a.quiet)
    control.refine_epoch = [](const RefineEpoch& e) {
      std::fprintf(stderr, "epoch %lld: loss %.4f (cross-entropy %.4f, penalty %.4g), train accuracy %.3f, %.1fs\n",
                   static_cast<long long>(e.epoch), e.loss, e.cross_entropy, e.penalty, e.train_accuracy, e.seconds);
    };
  RefineResult r = run(a.job, control);
  if (!a.quiet) {
    const nlohmann::json& acc = r.report["accuracy"];
    std::cout << "accuracy before -> after:";
    for (const auto& [name, v] : acc["before"].items())
      std::cout << "  " << name << " " << v["accuracy"].get<double>() << " -> "
                << acc["after"][name]["accuracy"].get<double>();
    const nlohmann::json& au = r.report["audit"];
    std::cout << "\naudit before: " << au["before"]["evidence"].get<std::string>() << "\naudit after:  "
              << au["after"]["evidence"].get<std::string>() << "\nregion " << r.report["region"].dump() << ": "
              << 100 * au["before"]["region"]["mean_relevance_share"].get<double>() << "% -> "
              << 100 * au["after"]["region"]["mean_relevance_share"].get<double>() << "% of the relevance; shortcut "
              << (au["shortcut_gone"].get<bool>() ? "gone" : "STILL THERE") << "\n";
    for (const auto& f : r.files) std::cout << "  wrote " << f << "\n";
  }
  return 0;
}

using VisualizeArgs = JobArgs<VisualizeJob>;

int run_visualize(VisualizeArgs& a) {
  VisualizeResult r = run_with_progress(a);
  if (!a.quiet) {
    for (const auto& res : r.report["results"])
      std::cout << res["objective"].get<std::string>() << ": " << res["final"].get<double>() << " after "
                << res["curve"].size() << " steps\n";
    if (r.report.contains("atlas"))
      std::cout << "atlas of " << r.report["atlas"]["channels"].get<int64_t>() << " channels\n";
    std::cout << r.report["model_evaluations"].get<int64_t>() << " forward+backward passes in " << std::fixed
              << std::setprecision(2) << r.report["wall_seconds"].get<double>() << " s\n";
    for (const auto& f : r.files) std::cout << "  wrote " << f << "\n";
  }
  return 0;
}

using TcavArgs = JobArgs<TcavJob>;

int run_tcav(TcavArgs& a) {
  nlohmann::json r = run_with_progress(a);
  if (!a.quiet) {
    std::cout << "TCAV of target " << r["target"].get<int64_t>() << " at " << r["layer"].get<std::string>() << " ("
              << r["random_sets"].get<int64_t>() << " random sets; random sign_count "
              << r["random"]["sign_count"]["mean"].get<double>() << ")\n";
    for (const auto& c : r["concepts"])
      std::cout << "  " << c["name"].get<std::string>() << ": sign_count " << c["sign_count"]["mean"].get<double>()
                << ", magnitude " << c["magnitude"]["mean"].get<double>() << ", CAV accuracy "
                << c["cav_accuracy"]["mean"].get<double>() << ", p " << c["p_value_bonferroni"].get<double>()
                << " (Bonferroni): " << c["verdict"].get<std::string>() << "\n";
    if (!a.job.out.empty()) std::cout << "wrote " << a.job.out << "/tcav.json\n";
  }
  return 0;
}

using CrpArgs = JobArgs<CrpJob>;

int run_crp(CrpArgs& a) {
  nlohmann::json r = run_with_progress(a);
  if (!a.quiet) {
    for (const auto& s : r["samples"]) {
      std::cout << "target " << s["target"].get<int64_t>() << ":";
      for (const auto& c : s["channels"])
        std::cout << "  channel " << c["channel"].get<int64_t>() << " " << c["relevance"].get<double>();
      std::cout << "\n";
    }
    if (!a.job.out.empty()) std::cout << "wrote " << a.job.out << "/crp.json and the heatmaps\n";
  }
  return 0;
}

using CraftArgs = JobArgs<CraftJob>;

int run_craft(CraftArgs& a) {
  CraftJobResult r = run_with_progress(a);
  if (!a.quiet) {
    std::cout << r.report["patches"].get<int64_t>() << " patches, NMF relative error " << std::setprecision(3)
              << r.report["nmf_relative_error"].get<double>() << "; concepts by importance (total Sobol index):\n";
    for (const auto& c : r.report["concepts"])
      std::cout << "  " << c["file"].get<std::string>() << "  " << c["importance"].get<double>() << "\n";
    for (const auto& f : r.files) std::cout << "  wrote " << f << "\n";
  }
  return 0;
}

int run_methods(bool json) {
  const auto& reg = Registry::builtin();
  if (json) {
    std::cout << reg.to_json().dump(2) << "\n";
    return 0;
  }
  for (const auto& m : reg.methods()) {
    std::cout << m.name << "  (" << m.family << ")\n    " << m.description << "\n    " << m.reference << "\n";
    for (const auto& [key, field] : m.schema.items()) {
      std::cout << "    --option " << key << "=" << field["default"].dump() << "  [" << field["type"].get<std::string>()
                << "] " << field["description"].get<std::string>() << "\n";
    }
    for (const auto& [list, entries] : m.catalog.items()) {
      std::cout << "    " << list << ":\n";
      for (const auto& [name, text] : entries.items()) std::cout << "      " << name << "  " << text.get<std::string>() << "\n";
    }
    std::cout << "\n";
  }
  return 0;
}

int run_info(const InfoJob& job, bool json) {
  const nlohmann::json out = run(job);
  if (json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  const nlohmann::json& spec = out["input"];
  const auto shape = spec.value("shape", std::vector<int64_t>{});
  const auto layout = spec.value("layout", std::string());
  const auto out_shape = out["output_shape"].get<std::vector<int64_t>>();
  std::cout << "model   " << job.model << "\n";
  std::cout << "input   " << (shape.empty() ? "unknown shape (give --input-shape)" : join(shape))
            << (layout.empty() ? "" : " " + layout) << "\n";
  if (spec.contains("mean")) std::cout << "        normalised with mean/std from the model's spec\n";
  if (!out_shape.empty()) std::cout << "output  " << join(out_shape) << " " << out["output_kind"].get<std::string>() << "\n";
  if (out["classes"].get<int64_t>() > 0) std::cout << "classes " << out["classes"].get<int64_t>() << "\n";
  for (const auto& p : out["forward_parameters"])
    std::cout << "also    " << p["name"].get<std::string>() << ": " << p["type"].get<std::string>()
              << (p["has_default"].get<bool>() ? " (optional)" : " (required: --forward-arg)") << "\n";
  const nlohmann::json& layers = out["layers"];
  if (!layers.empty()) {
    std::cout << "\nlayers (" << layers.size() << ")\n";
    size_t w = 5;
    for (const auto& l : layers) w = std::max(w, l["name"].get<std::string>().size());
    for (const auto& l : layers) {
      const auto ls = l["output_shape"].get<std::vector<int64_t>>();
      const int64_t calls = l["calls"].get<int64_t>();
      std::cout << "  " << std::left << std::setw(static_cast<int>(w) + 2) << l["name"].get<std::string>()
                << std::setw(22) << l["type"].get<std::string>() << (ls.empty() ? "(not a tensor)" : join(ls))
                << (calls > 1 ? "  (runs " + std::to_string(calls) + " times; the last output is tapped)" : "") << "\n";
    }
  }
  return 0;
}

// Errors are one line: a torch message may carry a traceback; keep its first line.
std::string one_line(std::string s) {
  auto nl = s.find('\n');
  if (nl != std::string::npos) s = s.substr(0, nl);
  return s;
}

int exit_code_for(const std::exception& e) {
  if (dynamic_cast<const Cancelled*>(&e)) return 130;
  if (dynamic_cast<const UnsupportedModel*>(&e)) return 3;
  if (dynamic_cast<const IoError*>(&e) || dynamic_cast<const ParseError*>(&e)) return 4;
  if (dynamic_cast<const InvalidArgument*>(&e) || dynamic_cast<const ShapeMismatch*>(&e)) return 2;
  return 1;
}

// `candela explain-dataset ...`: the Dask runner lives in the Python package (candela.dask);
// this hands it the arguments, with the package this build made (BUILD/python) on the path.
int run_explain_dataset(int argc, char** argv) {
  namespace fs = std::filesystem;
  const char* python = std::getenv("CANDELA_PYTHON");
  std::string interpreter = python ? python : "/usr/bin/python3";
  std::string path;
  if (const char* p = std::getenv("CANDELA_PYTHONPATH")) {
    path = p;
  } else {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) path = (exe.parent_path().parent_path() / "python").string();
  }
  if (!path.empty()) {
    const char* old = std::getenv("PYTHONPATH");
    const std::string joined = old && *old ? path + ":" + old : path;
    setenv("PYTHONPATH", joined.c_str(), 1);
  }
  std::vector<char*> args = {interpreter.data(), const_cast<char*>("-m"), const_cast<char*>("candela.dask")};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  execv(interpreter.c_str(), args.data());
  std::cerr << "candela: error: cannot run " << interpreter << " for explain-dataset (" << std::strerror(errno)
            << "); set CANDELA_PYTHON to a Python with torch and the candela package.\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "explain-dataset") return run_explain_dataset(argc, argv);
  CLI::App app{"Candela: explain the predictions of deep-learning models.\n\n"
               "Example:\n  candela explain --model digits_cnn.pt --input digit_0.png --method integrated_gradients --out out/\n"};
  app.require_subcommand(1);
  cancel_on_interrupt();
  app.fallthrough();  // global flags such as --threads may follow the subcommand
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--threads", threads, "Intra-op threads (default: all cores)")->check(CLI::Range(1, 1024));

  // explain
  MethodArgs<ExplainJob> ea;
  auto* explain = app.add_subcommand("explain", "Explain a model's prediction for an input.");
  explain->footer(
      "Examples:\n"
      "  candela explain --model digits_cnn.pt --input digit_0.png --method integrated_gradients --out out/ig\n"
      "  candela explain --model mlp.pt --input rows.npy --method noise_tunnel --option nt_samples=20 \\\n"
      "      --option base_method=integrated_gradients --target 1 --out out/sg\n"
      "  candela explain --model resnet18.pt --input cat.png --method grad_cam --layer layer4 --out out/cam\n"
      "  candela explain --model mlp.pt --input rows.npy --method integrated_gradients --explain-in-words --out out/ig\n"
      "  candela explain --model mlp.pt --input rows.csv --background train.csv --method kernel_shap --out out/shap\n"
      "  candela explain --model resnet18.pt --input cat.png --method lime --features slic:20 --out out/lime\n"
      "  candela explain --model resnet18.pt --input cat.png --method lrp --composite epsilon_gamma_box --out out/lrp\n"
      "  candela explain --model text_bert.pt --input \"the movie was great\" --method layer_integrated_gradients \\\n"
      "      --layer tok --aggregate word --out out/text\n"
      "  candela explain --model text_bert.pt --input lines.txt --method attention_rollout --out out/rollout\n"
      "  candela explain --model lm.pt --input \"the old dog very big sad a brown today barks\" --method attn_lrp \\\n"
      "      --layer tok --target logprob:10 --out out/lm        (log p(barks | the tokens before it))\n"
      "  candela explain --model lm.pt --input lm_test_ids.npy --method layer_integrated_gradients --layer tok \\\n"
      "      --target contrast:10:barks:meows --out out/contrast\n"
      "  candela explain --model lm.pt --input lines.txt --method attn_lrp --layer tok --per-step --out out/steps\n"
      "  candela explain --model bert.onnx --input lines.txt --method layer_integrated_gradients --layer tok \\\n"
      "      --mask mask.npy --forward-arg token_type_ids=types.npy --out out/bert   (forward(input_ids, attention_mask,\n"
      "      token_type_ids); without --mask a text input gets 0 at the tokenizer's padding)\n"
      "Writes attributions.npy, attribution.json and, for images, heatmap.png and heatmap_raw.png; for token models\n"
      "(layout NL: text, a .txt of lines or ids .npy) tokens.json and tokens.html (highlighted text); for the attention\n"
      "methods attention_maps.npy [N, layers, heads, L, L] and attention map PNGs (first 8 samples); with --per-step\n"
      "attributions_steps.npy [N, L-1, L], steps.json and steps_<i>.png (first 8 samples) instead.");
  explain->add_option("--model", ea.job.model, "TorchScript model file (.pt); a sidecar .json may describe its input")->required();
  explain->add_option("--input", ea.job.input, "Input: an image (PNG, JPEG, ...) or a .npy array [N, ...]; for a token "
                      "model also text or a .txt file of lines")->required();
  explain->add_option("--method", ea.job.method, "Attribution method (see `candela methods`)")->required();
  explain->add_option("--target", ea.job.target, "Class to explain: top1, an index, a class name, or one index per sample "
                      "(1,4,2); language models: logprob:POS[:TOKEN] (log p of the token at POS, default the input's) "
                      "or contrast:POS:TOKEN:FOIL (log p(TOKEN) - log p(FOIL)), tokens by id or vocabulary string");
  explain->add_option("--option", ea.options, "Method option KEY=VALUE (repeatable)");
  explain->add_option("--layer", ea.job.layers, "Layer to explain or tap, as `candela info` names it (repeatable)");
  explain->add_option("--composite", ea.job.composite,
                      "LRP composite: epsilon_plus, epsilon_gamma_box, ... (see `candela methods`) or a JSON file");
  explain->add_option("--baseline", ea.job.baseline, "zeros, constant:V, blur:SIGMA, uniform:LO,HI, FILE.npy or dist:FILE.npy");
  explain->add_option("--out", ea.job.out, "Output folder")->required();
  explain->add_option("--features", ea.job.features,
                      "Feature groups for perturbation methods: each, grid:CELL, slic:REGION_SIZE, "
                      "felzenszwalb:SCALE, or FILE.npy of ids");
  explain->add_option("--background", ea.job.background,
                      "Background data (.csv or .npy rows): the baseline distribution for SHAP, LIME, ...");
  explain->add_option("--feature-names", ea.job.feature_names, "Names of tabular features: a,b,c or FILE.txt");
  explain->add_option("--training-data", ea.job.training_data,
                      "Tabular: training rows (.csv or .npy); the words place each value at its percentile among "
                      "them (default: the --background rows)");
  add_budget_flags(explain, ea.job.budget);
  explain->add_option("--device", ea.job.device, "cpu, cuda, cuda:N");
  explain->add_option("--sign", ea.job.sign, "Heatmap sign: auto, signed, absolute, positive, negative");
  explain->add_option("--colormap", ea.job.colormap, "Heatmap colormap: bwr, coolwarm, inferno, viridis, jet, gray");
  explain->add_option("--clip-percentile", ea.job.clip_percentile, "Clip the heatmap at this percentile of |value|");
  explain->add_option("--alpha", ea.job.alpha, "Overlay opacity in [0, 1]");
  explain->add_option("--token-reduction", ea.job.token_reduction,
                      "Token models: embedding attribution [N, L, D] -> [N, L] by sum (Captum) or l2 (inseq)");
  explain->add_option("--aggregate", ea.job.aggregate, "Token models: token (default) or word (WordPiece, BPE or SentencePiece pieces merged)");
  explain->add_option("--word-reduction", ea.job.word_reduction, "With --aggregate word: sum (default), mean or max");
  explain->add_flag("--per-step", ea.job.per_step,
                    "Language models: explain log p(token_t | tokens < t) at every position t = 1..L-1 (teacher "
                    "forcing): attributions_steps.npy [N, L-1, L], steps.json, steps_<i>.png");
  explain->add_option("--mask", ea.job.mask,
                      "For a model whose forward() takes an attention mask (attention_mask, or a parameter named like a "
                      "mask): FILE.npy ([N, L] or [1, L]), auto (default: 0 at the tokenizer's padding, 1 elsewhere, "
                      "when the model names a tokenizer) or none (forward()'s default)");
  explain->add_option("--forward-arg", ea.job.forward_args,
                      "Another parameter of forward() after the input: NAME=FILE.npy, one row per sample or one for "
                      "all (repeatable; `candela info MODEL` lists the parameters)");
  explain->add_flag("--quiet", ea.quiet, "No progress bar or summary");
  bool in_words = false;
  explain->add_flag("--explain-in-words", in_words,
                    "Print the explanation in words (also in attribution.json's \"summary\", each sentence with its numbers)");
  add_spec_flags(explain, ea.job.spec);

  // explain-dataset (handled before parsing, by the Python package; listed here for --help)
  app.add_subcommand("explain-dataset",
                     "Explain a whole data set on a Dask cluster, one result file per shard, resumable "
                     "(`candela explain-dataset --help`).")
      ->allow_extras();

  // report
  ReportArgs rp;
  auto* report_cmd = app.add_subcommand("report", "One self-contained HTML report (or Markdown and PNGs): prediction, "
                                                   "several methods side by side, trust checks, explanation in words.");
  report_cmd->footer(
      "Examples:\n"
      "  candela report --model digits_cnn.pt --input digit_0.png --methods saliency,integrated_gradients,grad_cam \\\n"
      "      --layer features.2 --out report.html\n"
      "  candela report --model mlp.pt --input rows.csv --methods integrated_gradients,kernel_shap --max-samples 3 \\\n"
      "      --format md --out report/\n"
      "  candela report --model text_bert.pt --input \"a great movie\" --methods attn_lrp,layer_integrated_gradients \\\n"
      "      --layer tok --out text.html\n"
      "HTML: one file that opens from file:// with no network (the web UI's components with the data inlined; needs\n"
      "the built web UI, web/dist/report.html). Shows the input, the top-k prediction, each method's map on one shared\n"
      "colour scale, completeness, warnings, the model parameter randomisation check (Adebayo et al. 2018), deletion and\n"
      "insertion curves (Petsiuk et al. 2018), agreement between methods (Spearman, top-10% IoU), waterfall plots\n"
      "(tabular), token highlights (text) and the explanation in words. --format md writes report.md, report.json and\n"
      "PNGs into a folder. See docs/report.md.");
  report_cmd->add_option("--model", rp.job.model, "Model file (.pt or .onnx)")->required();
  report_cmd->add_option("--input", rp.job.input, "An image, a .npy/.csv array [N, ...], or for a token model text or a "
                         ".txt of lines")->required();
  report_cmd->add_option("--methods", rp.job.methods, "Methods shown side by side, comma-separated (see `candela methods`)")
      ->required()
      ->delimiter(',');
  report_cmd->add_option("--out", rp.job.out, "The .html file (--format html) or a folder (--format md)")->required();
  report_cmd->add_option("--format", rp.job.format, "html (one self-contained file, default) or md (Markdown and PNGs)");
  report_cmd->add_option("--target", rp.job.target, "Class to explain: top1, an index, a class name, or one index per sample");
  report_cmd->add_option("--top-k", rp.job.top_k, "Classes shown in the prediction (default 5)");
  report_cmd->add_option("--layer", rp.job.layers, "Layer for the methods that take one (CAMs, layer methods; a token "
                         "model's embedding), repeatable");
  report_cmd->add_option("--method-option", rp.method_options, "METHOD.KEY=VALUE (repeatable)");
  report_cmd->add_option("--baseline", rp.job.baseline, "Baseline of the methods that use one: zeros, constant:V, blur:SIGMA, ...");
  report_cmd->add_option("--features", rp.job.features, "Feature groups for perturbation methods: each, grid:CELL, slic:N, ...");
  report_cmd->add_option("--curve-steps", rp.job.curve_steps, "Steps of the deletion and insertion curves (default 20)");
  report_cmd->add_option("--max-samples", rp.job.max_samples, "Show the first N rows of a many-row input (default 8)");
  report_cmd->add_flag("--no-randomisation", rp.no_randomisation,
                       "Skip the model parameter randomisation check");
  report_cmd->add_option("--randomisation-mode", rp.job.randomisation_mode,
                         "full (default: every layer randomised at once, one more explanation per method) or cascading "
                         "(the paper's: one more explanation per layer with parameters)");
  report_cmd->add_option("--title", rp.job.title, "Title (default: model and input)");
  report_cmd->add_option("--web", rp.job.web, "Folder holding the built web UI's report.html (default: found as serve finds web/dist)");
  report_cmd->add_flag("--quiet", rp.quiet, "No progress bar or summary");
  add_budget_flags(report_cmd, rp.job.budget);
  add_spec_flags(report_cmd, rp.job.spec);

  // methods
  bool methods_json = false;
  auto* methods = app.add_subcommand("methods", "List every method with its options and defaults.");
  methods->footer("Example:\n  candela methods\n  candela methods --json > methods.json");
  methods->add_flag("--json", methods_json, "Print the registry as JSON");

  // info
  InfoJob info_job;
  bool info_json = false;
  auto* info = app.add_subcommand("info", "Show a model's input, output and layers with their output shapes.");
  info->footer("Example:\n  candela info resnet18.pt\n  candela info model.pt --input-shape 3,224,224 --json");
  info->add_option("model", info_job.model, "TorchScript model file")->required();
  info->add_flag("--json", info_json, "Print as JSON");
  add_spec_flags(info, info_job.spec);

  // evaluate
  EvaluateArgs va;
  auto* evaluate_cmd = app.add_subcommand("evaluate", "Score methods with quality metrics over a data set (resumable).");
  evaluate_cmd->footer(
      "Examples:\n"
      "  candela evaluate --model model.pt --data x_test.npy --masks masks.npy \\\n"
      "      --methods saliency,integrated_gradients,grad_cam --method-option grad_cam.layers=conv3 \\\n"
      "      --metrics pointing_game,relevance_mass_accuracy,deletion --out eval/\n"
      "  candela evaluate --model model.pt --data images/ --methods lrp --metrics sparseness,entropy --out eval2/\n"
      "Writes results.csv (sample, method, metric, value), results.json (mean, 95% bootstrap interval, rank) and\n"
      "summary.md. Interrupted, the same command resumes from journal.jsonl in --out.");
  evaluate_cmd->add_option("--model", va.job.model, "TorchScript model file (.pt)")->required();
  evaluate_cmd->add_option("--data", va.job.data, "Samples: a .npy/.csv array [N, ...], or a folder of images")->required();
  evaluate_cmd->add_option("--labels", va.job.labels, ".npy of class indices to explain (default: the model's top-1)");
  evaluate_cmd->add_option("--masks", va.job.masks, ".npy of ground-truth masks [N, H, W] (nonzero = relevant)");
  evaluate_cmd->add_option("--methods", va.job.methods, "Methods, comma-separated (see `candela methods`)")
      ->required()
      ->delimiter(',');
  evaluate_cmd->add_option("--metrics", va.job.metrics, "Metrics, comma-separated (see `candela metrics`)")
      ->required()
      ->delimiter(',');
  evaluate_cmd->add_option("--method-option", va.method_options, "METHOD.KEY=VALUE (repeatable)");
  evaluate_cmd->add_option("--metric-option", va.metric_options, "METRIC.KEY=VALUE (repeatable)");
  evaluate_cmd->add_option("--baseline", va.job.baseline, "Baseline for methods and metrics that use one");
  evaluate_cmd->add_option("--mask", va.job.mask, "As explain's: the attention mask forward() gets: FILE.npy, auto "
                           "(default: from the tokenizer's padding) or none; with a row per sample, each sample is a "
                           "chunk of its own");
  evaluate_cmd->add_option("--forward-arg", va.job.forward_args,
                           "As explain's: another parameter of forward() after the input, NAME=FILE.npy (repeatable)");
  evaluate_cmd->add_option("--out", va.job.out, "Output folder (resumed if it holds a run with the same settings)")->required();
  evaluate_cmd->add_option("--chunk", va.job.chunk, "Samples per unit of work and journal entry");
  evaluate_cmd->add_option("--bootstrap", va.job.bootstrap, "Bootstrap resamples for the 95% intervals");
  evaluate_cmd->add_option("--seed", va.job.seed, "Seed of the bootstrap");
  evaluate_cmd->add_option("--max-samples", va.job.max_samples, "Use only the first N samples")->check(CLI::NonNegativeNumber);
  add_budget_flags(evaluate_cmd, va.job.budget);
  evaluate_cmd->add_flag("--quiet", va.quiet, "No progress bar or summary");
  add_spec_flags(evaluate_cmd, va.job.spec);

  // recommend
  RecommendArgs rc;
  auto* recommend_cmd = app.add_subcommand(
      "recommend", "Which method to use for your model and data: a short evaluation, ranked per question.");
  recommend_cmd->footer(
      "Examples:\n"
      "  candela recommend --model model.pt --data x_test.npy\n"
      "  candela recommend --model model.pt --data groundtruth/patterns --samples 32 --out rec/\n"
      "  candela recommend --model tabular.pt --data rows.npy --baseline dist:train.npy \\\n"
      "      --methods saliency,kernel_shap,lime --json > rec.json\n"
      "Evaluates the methods that apply to the input (images, tables or tokens; default: the cheap ones) on the\n"
      "first --samples samples and prints, per question (localisation when ground-truth masks are found,\n"
      "faithfulness, stability, cost), the methods ranked with the mean and 95% interval of each metric, and\n"
      "under \"avoid\" the methods that fail the randomisation check. Masks are found beside the data as\n"
      "masks_NAME.npy for x_NAME.npy or NAME_masks.npy for NAME.npy. See docs/guide.md.");
  recommend_cmd->add_option("--model", rc.job.model, "TorchScript model file (.pt)")->required();
  recommend_cmd->add_option("--data", rc.job.data, "Samples: a .npy/.csv array, a folder of images, or a folder with x_test.npy")
      ->required();
  recommend_cmd->add_option("--labels", rc.job.labels, ".npy of class indices to explain (default: the model's top-1)");
  recommend_cmd->add_option("--masks", rc.job.masks, ".npy of ground-truth masks (default: found beside the data)");
  recommend_cmd->add_option("--methods", rc.job.methods, "Methods to compare, comma-separated (default: by input kind)")
      ->delimiter(',');
  recommend_cmd->add_option("--method-option", rc.method_options, "METHOD.KEY=VALUE (repeatable)");
  recommend_cmd->add_option("--baseline", rc.job.baseline, "Baseline for methods and metrics that use one");
  recommend_cmd->add_option("--samples", rc.job.samples, "Samples evaluated, the first N (default 16)")
      ->check(CLI::PositiveNumber);
  recommend_cmd->add_option("--bootstrap", rc.job.bootstrap, "Bootstrap resamples for the 95% intervals");
  recommend_cmd->add_option("--seed", rc.job.seed, "Seed of the bootstrap");
  recommend_cmd->add_option("--randomisation-threshold", rc.job.randomisation_threshold,
                            "Similarity to the randomised model's map above which a method fails the check (default 0.8)");
  recommend_cmd->add_option("--out", rc.job.out, "Output folder: recommend.json, recommend.md, results.csv");
  recommend_cmd->add_flag("--json", rc.json, "Print recommend.json on stdout instead of the text");
  recommend_cmd->add_flag("--quiet", rc.quiet, "No progress bar or text");
  add_budget_flags(recommend_cmd, rc.job.budget);
  add_spec_flags(recommend_cmd, rc.job.spec);

  // metrics
  bool metrics_json = false;
  auto* metrics_cmd = app.add_subcommand("metrics", "List every evaluation metric with its options and defaults.");
  metrics_cmd->footer("Example:\n  candela metrics\n  candela metrics --json > metrics.json");
  metrics_cmd->add_flag("--json", metrics_json, "Print as JSON");

  // audit
  MethodArgs<AuditJob> aa;
  auto* audit_cmd = app.add_subcommand("audit", "Look for a shortcut: a small image region most explanations rely on.");
  audit_cmd->footer(
      "Example:\n"
      "  candela audit --model model.pt --data x_test.npy --method integrated_gradients --out audit/\n"
      "Writes audit.json: the window holding the most relevance, its share against its area, per class and\n"
      "per cluster of explanations (k-means), and whether it is a suspected shortcut.");
  audit_cmd->add_option("--model", aa.job.model, "TorchScript model file (.pt)")->required();
  audit_cmd->add_option("--data", aa.job.data, "Samples: a .npy array [N, ...] or a folder of images")->required();
  audit_cmd->add_option("--labels", aa.job.labels, ".npy of classes to explain (default: the model's top-1)");
  audit_cmd->add_option("--method", aa.job.method, "Attribution method");
  audit_cmd->add_option("--option", aa.options, "Method option KEY=VALUE (repeatable)");
  audit_cmd->add_option("--baseline", aa.job.baseline, "Baseline for the method");
  audit_cmd->add_option("--window", aa.job.window, "Window side as a fraction of the image side");
  audit_cmd->add_option("--factor", aa.job.factor, "Relevance share over area share that counts as concentrated");
  audit_cmd->add_option("--min-fraction", aa.job.min_fraction, "Share of samples that makes it a suspected shortcut");
  audit_cmd->add_option("--clusters", aa.job.clusters, "k of the k-means over the explanations");
  audit_cmd->add_option("--seed", aa.job.seed, "Seed of the clustering");
  audit_cmd->add_option("--max-samples", aa.job.max_samples, "Use only the first N samples")->check(CLI::NonNegativeNumber);
  audit_cmd->add_option("--out", aa.job.out, "Output folder")->required();
  audit_cmd->add_flag("--quiet", aa.quiet, "No summary");
  add_budget_flags(audit_cmd, aa.job.budget);
  add_spec_flags(audit_cmd, aa.job.spec);

  // serve
  ServerOptions so;
  auto* serve_cmd = app.add_subcommand("serve", "Serve the engine over HTTP: a JSON API with jobs, progress and stored results.");
  serve_cmd->footer(
      "Examples:\n"
      "  candela serve --models models/ --data samples/\n"
      "  candela serve --models models/ --port 0 --workers 2 --results /var/lib/candela\n"
      "  CANDELA_TOKEN=\"$(cat token.txt)\" candela serve --models models/ --host 0.0.0.0 --cors https://ui.example.org\n"
      "(--token T works too, but a command line is visible to every user in `ps`.)\n"
      "Prints its URL on one line. Binds 127.0.0.1 unless --host is given; any other address needs --token.\n"
      "See docs/api.md for the endpoints.");
  serve_cmd->add_option("--models", so.models, "Folder of model files (.pt, .onnx) with their sidecars")->required();
  serve_cmd->add_option("--data", so.data, "Folder of samples (images, .npy, .csv) requests may name");
  serve_cmd->add_option("--results", so.results, "Result store and job records (kept across restarts)");
  serve_cmd->add_option("--static", so.static_dir, "Folder of web UI files served at / (default: installed web UI, else an API index)");
  serve_cmd->add_option("--host", so.host, "Address to bind (any other than loopback needs --token)");
  serve_cmd->add_option("--port", so.port, "Port (0: an ephemeral one, printed)")->check(CLI::Range(0, 65535));
  serve_cmd->add_option("--token", so.token, "Require 'Authorization: Bearer TOKEN' on every /api call")
      ->envname("CANDELA_TOKEN");  // from the environment, the token stays out of `ps`
  serve_cmd->add_option("--cors", so.cors, "Allow this origin to call the API from a browser (default: no CORS)");
  serve_cmd->add_option("--workers", so.workers, "Jobs run at once; --threads is split between them")->check(CLI::Range(1, 256));
  serve_cmd->add_option("--queue", so.queue, "Jobs waiting beyond the running ones; more get 429")->check(CLI::Range(0, 1000000));
  serve_cmd->add_option("--http-threads", so.http_threads, "Connections served at once (event streams hold one each)")
      ->check(CLI::Range(4, 4096));
  serve_cmd->add_option("--max-upload", so.max_upload_bytes, "Largest uploaded input in bytes (413 past it)")
      ->check(CLI::PositiveNumber);
  serve_cmd->add_option("--max-steps", so.max_steps, "Largest n_steps/max_steps a request may ask (422 past it)")
      ->check(CLI::PositiveNumber);
  serve_cmd->add_option("--max-samples", so.max_samples, "Largest n_samples/nt_samples/... a request may ask (422 past it)")
      ->check(CLI::PositiveNumber);
  serve_cmd->add_option("--max-rows", so.max_rows, "Most input rows per request (422 past it)")->check(CLI::PositiveNumber);
  serve_cmd->add_option("--max-eval-samples", so.max_eval_samples, "Most samples one evaluation may use")
      ->check(CLI::PositiveNumber);

  // robustness
  RobustnessArgs ra;
  auto* robust_cmd = app.add_subcommand("robustness", "Adversarial probes: FGSM, PGD, DeepFool; robust accuracy by eps, "
                                                      "minimal flipping eps, explanation fragility.");
  robust_cmd->footer(
      "Examples:\n"
      "  candela robustness --model digits_cnn.pt --data digits_test.npy --attack pgd --eps 0.03 --out rob/\n"
      "  candela robustness --model digits_cnn.pt --data x.npy --labels y.npy --attack fgsm --eps 0.1 --out rob/\n"
      "  candela robustness --model resnet18.pt --data images/ --attack deepfool --search-steps 0 --out rob/\n"
      "eps and alpha are in pixel units of the spec's range (normalisation happens inside, as torchattacks).\n"
      "Writes adversarial.npy (same shape as the data, clamped to the input range), perturbation.npy,\n"
      "robustness.json (per sample and per data set) and, for images, perturbation_<i>.png next to\n"
      "attribution_<i>.png and attribution_perturbed_<i>.png.");
  robust_cmd->add_option("--model", ra.job.model, "TorchScript (.pt) or ONNX (.onnx) model file")->required();
  robust_cmd->add_option("--data", ra.job.data, "Samples: a .npy/.csv array [N, ...] or a folder of images")->required();
  robust_cmd->add_option("--labels", ra.job.labels, ".npy of true classes (default: the model's top-1)");
  robust_cmd->add_option("--out", ra.job.out, "Output folder")->required();
  add_flags(robust_cmd, ra.job.options);
  robust_cmd->get_option("--eps-curve")->delimiter(',');
  robust_cmd->add_option("--max-samples", ra.job.max_samples, "Use only the first N samples")->check(CLI::NonNegativeNumber);
  robust_cmd->add_flag("--quiet", ra.quiet, "No progress bar or summary");
  add_budget_flags(robust_cmd, ra.job.budget);
  add_spec_flags(robust_cmd, ra.job.spec);

  // refine
  RefineArgs fa;
  auto* refine_cmd = app.add_subcommand("refine", "Retrain a classifier so it stops relying on an image region an audit "
                                                  "flagged: right for the right reasons, or the region randomised.");
  refine_cmd->footer(
      "Examples:\n"
      "  candela audit --model shortcut/model.pt --data shortcut/x_test.npy --out audit/\n"
      "  candela refine --model shortcut/model.pt --data shortcut/ --region audit/audit.json --method rrr --out fixed/\n"
      "  candela refine --model m.pt --data x_train.npy --labels y_train.npy --region 1,1,5,5 --method randomize \\\n"
      "      --test x_test.npy --test-labels y_test.npy --out fixed/\n"
      "--data as a folder reads x_train.npy, y_train.npy and, when present, x_test.npy, y_test.npy,\n"
      "x_test_clean.npy, watermark_train.npy, watermark_test.npy (the ground-truth shortcut set).\n"
      "Writes model.pt and model.json (the retrained model) and refine.json: accuracy before and after on\n"
      "the test, clean, consistent and contradicting splits, the audit before and after, the loss per epoch.\n"
      "Defaults follow Ross et al. 2017 (l2_grads 1000, l2_params 1e-4, batch 256) except lr 3e-3 and 12 epochs\n"
      "(fine-tuning, see docs/refine.md). Progress per epoch on stderr.");
  refine_cmd->add_option("--model", fa.job.model, "TorchScript model file (.pt) of an image classifier")->required();
  refine_cmd->add_option("--data", fa.job.data, "Training data: a folder with x_train.npy, y_train.npy, or a .npy")
      ->required();
  refine_cmd->add_option("--region", fa.job.region, "Region to unlearn: y0,x0,y1,x1 (end-exclusive) or an audit.json")
      ->required();
  refine_cmd->add_option("--out", fa.job.out, "Output folder")->required();
  refine_cmd->add_option("--labels", fa.job.labels, "Training labels .npy (with --data X.npy)");
  refine_cmd->add_option("--test", fa.job.test, "Test images .npy (default: the folder's x_test.npy)");
  refine_cmd->add_option("--test-labels", fa.job.test_labels, "Test labels .npy (default: y_test.npy)");
  refine_cmd->add_option("--test-clean", fa.job.test_clean, "Test images without the artefact (default: x_test_clean.npy)");
  refine_cmd->add_option("--marked", fa.job.marked, "Bool .npy: training images with the artefact (default: watermark_train.npy)");
  refine_cmd->add_option("--test-marked", fa.job.test_marked, "Bool .npy: test images with it (default: watermark_test.npy)");
  add_flags(refine_cmd, fa.job.options);
  refine_cmd->add_option("--audit-method", fa.job.audit_method, "Attribution method of the audits before and after");
  refine_cmd->add_option("--audit-samples", fa.job.audit_samples, "Test images the audits explain (0: all)")
      ->check(CLI::NonNegativeNumber);
  refine_cmd->add_flag("--quiet", fa.quiet, "No progress or summary");
  add_spec_flags(refine_cmd, fa.job.spec);

  // counterfactual
  CounterfactualArgs ca;
  auto* cf_cmd = app.add_subcommand("counterfactual", "Counterfactuals: for tabular rows the closest changes that reach "
                                                      "another class (DiCE, Wachter) under feature constraints; for "
                                                      "images a sparse pixel change within the input range.");
  cf_cmd->footer(
      "Examples:\n"
      "  candela counterfactual --model mlp.pt --input rows.csv --background train.csv --target opposite --out cf/\n"
      "  candela counterfactual --model mlp.pt --input rows.csv --background train.csv --target 1 \\\n"
      "      --constraints c.json --count 4 --method dice --out cf/\n"
      "Constraints JSON (features by name or index):\n"
      "  {\"immutable\": [\"age\"], \"ranges\": {\"income\": [0, 100000]}, \"integer\": [\"children\"],\n"
      "   \"categorical\": [[\"color_red\", \"color_green\"]], \"monotone\": {\"education\": \"increase\"}}\n"
      "  candela counterfactual --model digits_cnn.pt --input digits.npy --target 3 --out cf/\n"
      "Writes counterfactuals.csv (each query row, then its counterfactuals) and counterfactuals.json\n"
      "(validity, proximity, sparsity, diversity per row). For an image model (no --background): the\n"
      "proximal-gradient L1 search (--image-learning-rate, --l1-weight, --kappa, --wachter-max-iter,\n"
      "--early-stop), writing counterfactuals.npy, change.npy, change_<i>.png and counterfactuals.json.");
  cf_cmd->add_option("--model", ca.job.model, "TorchScript (.pt) or ONNX (.onnx) model file")->required();
  cf_cmd->add_option("--input", ca.job.input, "Rows: .csv (a header names the features) or .npy [N, F]; or images")->required();
  cf_cmd->add_option("--background", ca.job.background, "Training rows (.csv or .npy): ranges and MADs (tabular only)");
  cf_cmd->add_option("--target", ca.job.target, "Class to reach: an index, a class name, or opposite (binary)");
  cf_cmd->add_option("--constraints", ca.job.constraints, "JSON file of feature constraints");
  cf_cmd->add_option("--out", ca.job.out, "Output folder")->required();
  add_flags(cf_cmd, ca.job.options);
  cf_cmd->add_flag("--quiet", ca.quiet, "No progress bar or summary");
  add_budget_flags(cf_cmd, ca.job.budget);
  add_spec_flags(cf_cmd, ca.job.spec);

  // visualize
  VisualizeArgs vz;
  auto* vis_cmd = app.add_subcommand("visualize", "Feature visualisation: images that maximise a channel, a neuron, a "
                                                  "layer (DeepDream), a class or any sum of these (Lucent's optvis).");
  vis_cmd->footer(
      "Examples:\n"
      "  candela visualize --model resnet18.pt --layer layer3 --channel 12 --out vis/\n"
      "  candela visualize --model resnet18.pt --objective 'channel(layer4,7) - 0.5*channel(layer4,3)' --out vis/\n"
      "  candela visualize --model resnet18.pt --objective 'channel(layer3,5) + 100*diversity(layer2)' --batch 4 --out vis/\n"
      "  candela visualize --model resnet18.pt --layer layer2 --atlas --atlas-channels 64 --steps 256 --out atlas/\n"
      "  candela visualize --model resnet18.pt --layer layer3 --channel 12 --data images/ --top-k 9 --out vis/\n"
      "  candela visualize --model resnet18.pt --layer layer4 --channel 7 --param maco --out vis/\n"
      "  candela visualize --model resnet18.pt --layer layer4 --channel 7 --param maco --maco-spectrum images/ --out vis/\n"
      "Objective kinds: neuron(LAYER,C[,X,Y]) channel(LAYER,C) deepdream(LAYER) class(C) diversity(LAYER);\n"
      "WEIGHT*KIND(...) scales a term, + and - combine terms, KIND(...)[B] applies to image B of the batch.\n"
      "Writes channel_C.png per --channel (and channel_C_examples.png: the --data samples that excite it\n"
      "most, cropped to the receptive field), objective.png, atlas.png (with --data: atlas_examples.png,\n"
      "one row per channel), and visualization.json whose `objective` array (with one objective) is the\n"
      "quantity maximised at each step. --param maco (Fel et al. 2023, Xplique's MACO: phase only, fixed\n"
      "magnitude, random crops, Nadam) also writes each image's transparency, NAME_alpha.png; its magnitude\n"
      "is the 1/f spectrum unless --maco-spectrum gives images whose mean |FFT| to use. --steps, --lr, --size\n"
      "and --sd at 0 take the parametrisation's defaults: Lucent's 512, 0.05, 128, 0.01; MACO's 256, 1, 512, 1.");
  vis_cmd->add_option("--model", vz.job.model, "TorchScript (.pt) or ONNX (.onnx) model taking images")->required();
  vis_cmd->add_option("--layer", vz.job.layer, "Layer whose channels to visualise (see `candela info`)");
  vis_cmd->add_option("--channel", vz.job.channels, "Channel of --layer to visualise (repeatable): channel_C.png");
  vis_cmd->add_option("--objective", vz.job.objective, "Objective text (see below): objective.png");
  vis_cmd->add_flag("--atlas", vz.job.atlas, "Visualise every channel of --layer in one grid: atlas.png");
  vis_cmd->add_option("--atlas-channels", vz.job.atlas_channels, "Atlas of the first N channels only (0: all)");
  vis_cmd->add_option("--atlas-batch", vz.job.atlas_batch, "Atlas channels optimised together, one image each");
  vis_cmd->add_option("--data", vz.job.data,
                      "Dataset examples: top-k samples of this folder/.npy per --channel and atlas channel, cropped");
  vis_cmd->add_option("--top-k", vz.job.top_k, "Dataset examples per channel");
  vis_cmd->add_option("--maco-spectrum", vz.job.maco_spectrum,
                      "--param maco: images (folder or .npy) whose mean |FFT| is the fixed magnitude (default 1/f)");
  vis_cmd->add_option("--out", vz.job.out, "Output folder")->required();
  add_flags(vis_cmd, vz.job.options);
  vis_cmd->add_flag("--quiet", vz.quiet, "No progress bar or summary");
  add_spec_flags(vis_cmd, vz.job.spec);

  // tcav
  TcavArgs tc;
  auto* tcav_cmd = app.add_subcommand("tcav", "TCAV: how much a concept (a set of example images) drives a class, "
                                               "tested against random concepts.");
  tcav_cmd->footer(
      "Example:\n"
      "  candela tcav --model resnet18.pt --layer layer3 --input zebras/ --target 340 \\\n"
      "      --concept striped=concepts/striped/ --concept dotted=concepts/dotted/ \\\n"
      "      --random random/0/ --random random/1/ --random random/2/ ... --out tcav/\n"
      "Writes tcav.json: per concept sign_count and magnitude over the random sets, the CAV accuracies,\n"
      "p-values (Bonferroni-corrected) and a verdict. Activations and CAVs are cached by content\n"
      "(--cache FOLDER, default ~/.cache/candela/tcav; --cache none turns it off).");
  tcav_cmd->add_option("--model", tc.job.model, "TorchScript (.pt) or ONNX (.onnx) model file")->required();
  tcav_cmd->add_option("--layer", tc.job.layer, "Layer of the CAVs (see `candela info`)")->required();
  tcav_cmd->add_option("--input", tc.job.input, "Inputs of the target class: a folder of images or a .npy")->required();
  tcav_cmd->add_option("--target", tc.job.target, "Class whose sensitivity is tested: an index or a class name")->required();
  tcav_cmd->add_option("--concept", tc.job.concepts, "NAME=PATH, PATH a folder of images or a .npy (repeatable)")->required();
  tcav_cmd->add_option("--random", tc.job.randoms, "A random set: a folder or a .npy (repeat, at least 3)")->required();
  tcav_cmd->add_option("--out", tc.job.out, "Output folder")->required();
  tcav_cmd->add_option("--cache", tc.job.cache, "Cache folder for activations and CAVs (none: off)");
  tcav_cmd->add_option("--max-samples", tc.job.max_samples, "Use only the first N samples of each set")
      ->check(CLI::NonNegativeNumber);
  add_flags(tcav_cmd, tc.job.options);
  tcav_cmd->add_flag("--quiet", tc.quiet, "No progress bar or summary");
  add_spec_flags(tcav_cmd, tc.job.spec);

  // crp
  CrpArgs cp;
  auto* crp_cmd = app.add_subcommand("crp", "Concept relevance propagation: how much each channel of a layer contributes "
                                             "to the LRP explanation, and where (conditional heatmaps).");
  crp_cmd->footer(
      "Examples:\n"
      "  candela crp --model resnet18.pt --layer layer3 --input cat.png --out crp/\n"
      "  candela crp --model resnet18.pt --layer layer3 --input cat.png --channel 12 --channel 40 \\\n"
      "      --data images/ --top-k 8 --composite epsilon_gamma_box --out crp/\n"
      "Writes crp.json (every channel's relevance per sample; the channels drawn; with --data the samples\n"
      "where each --channel is most relevant), channel_C.png (the heatmap conditioned on channel C) and lrp.png.");
  crp_cmd->add_option("--model", cp.job.model, "TorchScript model file (.pt)")->required();
  crp_cmd->add_option("--layer", cp.job.layer, "Layer whose channels condition the heatmaps")->required();
  crp_cmd->add_option("--input", cp.job.input, "An image or a .npy [N, ...]")->required();
  crp_cmd->add_option("--target", cp.job.target, "Class: top1, an index or a class name");
  crp_cmd->add_option("--channel", cp.job.channels, "Channel to draw (repeatable; default: the most relevant)");
  crp_cmd->add_option("--top-channels", cp.job.top_channels, "Without --channel: this many most relevant channels");
  crp_cmd->add_option("--data", cp.job.data, "Reference samples for each --channel: a folder of images or a .npy");
  crp_cmd->add_option("--top-k", cp.job.top_k, "Reference samples per channel");
  crp_cmd->add_option("--out", cp.job.out, "Output folder")->required();
  add_flags(crp_cmd, cp.job.lrp);
  crp_cmd->add_flag("--quiet", cp.quiet, "No progress bar or summary");
  add_spec_flags(crp_cmd, cp.job.spec);

  // craft
  CraftArgs cr;
  auto* craft_cmd = app.add_subcommand("craft", "CRAFT: concepts found automatically in a class's images (NMF of patch "
                                                 "activations), ranked by importance (Sobol indices).");
  craft_cmd->footer(
      "Example:\n"
      "  candela craft --model resnet18.pt --layer layer4 --input rabbits/ --target 330 --number-of-concepts 10 --out craft/\n"
      "Writes craft.json (each concept's importance and its top patches) and concept_K.png (K = 0 most important),\n"
      "the patches with the largest coefficient for that concept. The layer must follow a ReLU.");
  craft_cmd->add_option("--model", cr.job.model, "TorchScript (.pt) or ONNX (.onnx) model file")->required();
  craft_cmd->add_option("--layer", cr.job.layer, "Layer after a ReLU (see `candela info`)")->required();
  craft_cmd->add_option("--input", cr.job.input, "Images of the class: a folder or a .npy [N, C, H, W]")->required();
  craft_cmd->add_option("--target", cr.job.target, "The class: an index or a class name")->required();
  craft_cmd->add_option("--out", cr.job.out, "Output folder")->required();
  craft_cmd->add_option("--top-patches", cr.job.top_patches, "Patches shown per concept");
  add_flags(craft_cmd, cr.job.options);
  craft_cmd->add_flag("--quiet", cr.quiet, "No progress bar or summary");
  add_spec_flags(craft_cmd, cr.job.spec);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != 0) {
      std::cerr << "candela: error: " << e.what() << " (see `candela " << (app.get_subcommands().empty() ? "" : app.get_subcommands()[0]->get_name() + " ") << "--help`)\n";
      return 2;
    }
    return app.exit(e);
  }

  try {
    at::set_num_threads(threads);
    // Batches reuse the memory earlier batches freed instead of faulting in fresh pages
    // (core/memory.h); CANDELA_NO_MEMORY_REUSE=1 leaves malloc as it is.
    reuse_freed_memory();
    // A command runs each of its graphs a handful of times. TorchScript's profiling executor
    // spends its first runs profiling and then optimising, which on a CPU (where LibTorch fuses
    // nothing by default) costs more than it saves: without it the first explanation is about
    // 50 ms faster (saliency on resnet18) and later ones no slower. CANDELA_JIT_PROFILING=1 keeps it.
    if (!std::getenv("CANDELA_JIT_PROFILING")) torch::jit::getProfilingMode() = false;
    if (*explain) return run_explain(ea, in_words);
    if (*methods) return run_methods(methods_json);
    if (*info) return run_info(info_job, info_json);
    if (*evaluate_cmd) return run_evaluate(va);
    if (*metrics_cmd) return run_metrics(metrics_json);
    if (*recommend_cmd) return run_recommend(rc);
    if (*audit_cmd) return run_audit(aa);
    if (*report_cmd) return run_report(rp);
    if (*serve_cmd) {
      so.threads = threads;
      so.stop = g_interrupt;  // Ctrl-C, SIGTERM: stop, recording unfinished jobs as interrupted
      serve(so);
      return 0;
    }
    if (*robust_cmd) return run_robustness(ra);
    if (*cf_cmd) return run_counterfactual(ca);
    if (*refine_cmd) return run_refine(fa);
    if (*vis_cmd) return run_visualize(vz);
    if (*tcav_cmd) return run_tcav(tc);
    if (*craft_cmd) return run_craft(cr);
    if (*crp_cmd) return run_crp(cp);
  } catch (const candela::InternalError& e) {
    std::cerr << "candela: internal error (this is a bug in Candela; please report it with the command that "
                 "caused it): "
              << one_line(e.what()) << "\n";
    return 70;  // EX_SOFTWARE
  } catch (const candela::Error& e) {
    std::cerr << "candela: error: " << one_line(e.what()) << "\n";
    return exit_code_for(e);
  } catch (const c10::Error& e) {
    std::cerr << "candela: error: " << one_line(e.what_without_backtrace()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "candela: error: " << one_line(e.what()) << "\n";
    return 1;
  }
  return 0;
}
