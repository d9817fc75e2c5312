// The `candela` command: argument parsing and printing only; the work is in the library.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "candela/candela.h"
#include "candela/eval/evaluate.h"
#include "candela/eval/metrics.h"
#include "candela/io/npy.h"
#include "candela/io/file.h"
#include "candela/io/input.h"
#include "candela/methods/perturbation/feature_mask.h"
#include "candela/render/export.h"
#include "candela/render/heatmap.h"

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

// "1,2,3" -> {1, 2, 3}, as integers or numbers.
template <class T>
std::vector<T> parse_list(const std::string& text, const char* what) {
  std::vector<T> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* stop = nullptr;
    T v = std::is_integral_v<T> ? static_cast<T>(std::strtoll(item.c_str(), &stop, 10))
                                : static_cast<T>(std::strtod(item.c_str(), &stop));
    CANDELA_CHECK(!item.empty() && *stop == '\0', what, " must be comma-separated ",
                  std::is_integral_v<T> ? "integers" : "numbers", ", got '", text, "'.");
    out.push_back(v);
  }
  return out;
}

// Flags that describe the model's input, shared by `explain` and `info`.
struct SpecFlags {
  std::string shape, layout, mean, std, range;
  void add(CLI::App* app) {
    app->add_option("--input-shape", shape, "Per-sample input shape, e.g. 3,224,224 (overrides the model's .json)");
    app->add_option("--layout", layout, "Input layout: NCHW, NHWC, NC (tabular), NL (tokens)");
    app->add_option("--mean", mean, "Per-channel mean for image normalisation, e.g. 0.485,0.456,0.406");
    app->add_option("--std", std, "Per-channel std for image normalisation, e.g. 0.229,0.224,0.225");
    app->add_option("--range", range, "Pixel value range before normalisation, e.g. 0,1 or 0,255");
  }
  void apply(Model& model) const {
    InputSpec s = model.input_spec();
    if (!shape.empty()) s.shape = parse_list<int64_t>(shape, "--input-shape");
    if (!layout.empty()) s.layout = layout;
    if (s.layout.empty() && s.shape.size() == 3) s.layout = "NCHW";
    if (s.layout.empty() && s.shape.size() == 1) s.layout = "NC";
    if (!mean.empty()) s.mean = parse_list<double>(mean, "--mean");
    if (!std.empty()) s.std = parse_list<double>(std, "--std");
    if (!range.empty()) {
      auto r = parse_list<double>(range, "--range");
      CANDELA_CHECK(r.size() == 2, "--range takes MIN,MAX, got '", range, "'.");
      s.range_min = r[0];
      s.range_max = r[1];
    }
    model.set_input_spec(s);
  }
};

// A 4-D array with no layout in the spec: infer it from the data's shape, and say so.
void infer_layout_from(Model& model, const at::Tensor& batch) {
  InputSpec s = model.input_spec();
  const std::string note = infer_layout(s, batch);
  if (note.empty()) return;
  model.set_input_spec(s);
  std::cerr << "candela: " << note << "\n";
}

// A one-line progress bar on stderr, only when stderr is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled && isatty(STDERR_FILENO)) {}
  ~ProgressBar() { finish(); }
  ProgressCallback callback() {
    if (!enabled_) return {};
    return [this](const Progress& p) {
      auto now = std::chrono::steady_clock::now();
      if (p.done != p.total && now - last_ < std::chrono::milliseconds(100)) return;
      last_ = now;
      const int width = 30;
      double frac = p.total > 0 ? static_cast<double>(p.done) / p.total : 0.0;
      int fill = static_cast<int>(frac * width);
      std::fprintf(stderr, "\r%-34.34s [%s%s] %3d%% %lld/%lld", p.stage.c_str(), std::string(fill, '#').c_str(),
                   std::string(width - fill, '.').c_str(), static_cast<int>(frac * 100), (long long)p.done,
                   (long long)p.total);
      std::fflush(stderr);
      drawn_ = true;
    };
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\r%80s\r", "");
    drawn_ = false;
  }

 private:
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return "[" + s + "]";
}

// "a,b,c" or a text file with one name per line.
std::vector<std::string> read_names(const std::string& text) {
  std::vector<std::string> names;
  std::string item;
  if (text.size() > 4 && text.substr(text.size() - 4) == ".txt") {
    std::stringstream ss(read_file(text, 64 << 20));
    while (std::getline(ss, item))
      if (!item.empty()) names.push_back(item);
  } else {
    std::stringstream ss(text);
    while (std::getline(ss, item, ',')) names.push_back(item);
  }
  CANDELA_CHECK(!names.empty(), "--feature-names is empty; give a,b,c or a .txt file with one name per line.");
  return names;
}

// Everything `candela explain` was given.
struct ExplainArgs {
  std::string model, input, method, target = "top1", baseline = "zeros", out, device = "cpu";
  std::string features, background, feature_names, composite;
  std::vector<std::string> options, layers;
  bool baseline_given = false, quiet = false;
  SpecFlags spec;
  EvalOptions eval;
  HeatmapOptions heatmap;
};

int run_explain(const ExplainArgs& args) {
  const std::string& method = args.method;
  const auto& option_args = args.options;
  const auto& layers = args.layers;
  const auto& heatmap = args.heatmap;
  const bool quiet = args.quiet;
  // Validate everything cheap before loading anything heavy.
  const MethodInfo& info = Registry::builtin().get(method);
  nlohmann::json options = nlohmann::json::object();
  for (const auto& kv : option_args) {
    auto eq = kv.find('=');
    CANDELA_CHECK(eq != std::string::npos && eq > 0, "--option takes KEY=VALUE, got '", kv, "'.");
    std::string key = kv.substr(0, eq);
    CANDELA_CHECK(!options.contains(key), "--option ", key, " is given twice; keep one.");
    options[key] = parse_option_value(info.schema, method, key, kv.substr(eq + 1));
  }
  if (!layers.empty()) {
    CANDELA_CHECK(info.schema.contains("layers"), method, " takes no layer; drop --layer (methods that do: ",
                  [] {
                    std::string names;
                    for (const auto& m : Registry::builtin().methods())
                      if (m.schema.contains("layers")) names += (names.empty() ? "" : ", ") + m.name;
                    return names;
                  }(),
                  ").");
    CANDELA_CHECK(!options.contains("layers"), "give the layers either with --layer or with --option layers=..., not both.");
    options["layers"] = layers;
  }
  if (!args.composite.empty()) {
    CANDELA_CHECK(info.schema.contains("composite"), method, " takes no composite; --composite is for lrp.");
    CANDELA_CHECK(!options.contains("composite"),
                  "give the composite either with --composite or with --option composite=..., not both.");
    options["composite"] = args.composite;
  }
  auto explainer = info.create(options);
  CANDELA_CHECK(!args.baseline_given || explainer->uses_baseline(), method,
                " does not use a baseline; drop --baseline (methods that use one: ",
                [] {
                  std::string names;
                  for (const auto& m : Registry::builtin().methods())
                    if (m.uses_baseline) names += (names.empty() ? "" : ", ") + m.name;
                  return names;
                }(),
                ", and noise_tunnel around them).");
  heatmap.validate();
  CANDELA_CHECK(args.background.empty() || !args.baseline_given,
                "give either --baseline or --background (a data set: the baseline distribution), not both.");
  CANDELA_CHECK(args.background.empty() || explainer->uses_baseline(), method,
                " does not use background data; drop --background.");
  Baseline baseline = args.background.empty() ? Baseline::parse(args.baseline) : Baseline::distribution([&] {
    LoadedInput rows = load_input(args.background, InputSpec{});
    return rows.batch;
  }());

  Model model = Model::load(args.model);
  args.spec.apply(model);
  if (args.device != "cpu") model.to(args.device);
  LoadedInput input = load_input(args.input, model.input_spec());
  infer_layout_from(model, input.batch);
  if (!input.display.defined() && model.input_spec().is_image()) input.display = to_display(input.batch, model.input_spec());
  if (!args.feature_names.empty()) input.feature_names = read_names(args.feature_names);
  ExplainRequest req;
  req.inputs = input.batch.to(c10::Device(model.device()));
  req.target = Target::parse(args.target, model.class_names());
  req.baseline = baseline;
  if (!args.features.empty())
    req.feature_mask = make_feature_mask(args.features, input.batch, model.input_spec(), input.display);
  req.eval = args.eval;
  req.eval.cancel = g_interrupt;
  ProgressBar bar(!quiet);
  req.eval.progress = bar.callback();
  Attribution a = explainer->explain(model, req);
  bar.finish();
  for (const auto& w : a.warnings) std::cerr << "candela: warning: " << w["message"].get<std::string>() << "\n";
  auto files = write_explanation(args.out, a, model, input, heatmap);
  if (!quiet) {
    std::cout << method << ": " << a.model_evaluations << " model evaluations in " << std::fixed
              << std::setprecision(2) << a.wall_seconds << " s";
    if (a.convergence_delta.defined())
      std::cout << ", max |convergence delta| " << std::scientific << std::setprecision(2)
                << a.convergence_delta.abs().max().item<double>();
    std::cout << "\n";
    for (const auto& f : files) std::cout << "  wrote " << f << "\n";
  }
  return 0;
}

// ---- evaluate, metrics, audit -------------------------------------------------------------

// Comma list "a,b,c".
std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// --data: an array file, or a folder of images (sorted by name; the names become sample ids).
EvaluateData load_data(const std::string& path, const std::string& labels, const std::string& masks,
                       const Model& model, int64_t max_samples) {
  namespace fs = std::filesystem;
  EvaluateData d;
  CANDELA_CHECK_T(IoError, fs::exists(path), "cannot read '", path, "': no such file or folder. Check the path.");
  if (fs::is_directory(path)) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(path)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp"))
        files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    CANDELA_CHECK(!files.empty(), "the data set is empty: '", path, "' holds no .png, .jpg or .bmp images.");
    std::vector<at::Tensor> batches;
    for (const auto& f : files) {
      batches.push_back(load_input(f, model.input_spec()).batch);
      d.ids.push_back(fs::path(f).filename().string());
    }
    d.inputs = at::cat(batches);
  } else {
    d.inputs = load_input(path, model.input_spec()).batch;
  }
  CANDELA_CHECK(d.inputs.size(0) > 0, "the data set is empty: '", path, "' has no rows.");
  if (!labels.empty()) {
    at::Tensor l = read_npy(labels);
    CANDELA_CHECK(!at::isFloatingType(l.scalar_type()) || at::equal(l, l.round()), "'", labels,
                  "' must hold integer class indices.");
    d.labels = l.to(at::kLong).reshape({-1});
  }
  if (!masks.empty()) d.masks = read_npy(masks).ne(0);
  if (max_samples > 0 && max_samples < d.inputs.size(0)) {
    d.inputs = d.inputs.slice(0, 0, max_samples);
    if (d.labels.defined() && d.labels.size(0) > max_samples) d.labels = d.labels.slice(0, 0, max_samples);
    if (d.masks.defined() && d.masks.size(0) > max_samples) d.masks = d.masks.slice(0, 0, max_samples);
    if (!d.ids.empty()) d.ids.resize(max_samples);
  }
  return d;
}

// "name.key=value" options into per-name JSON, typed by each name's schema.
std::map<std::string, nlohmann::json> named_options(const std::vector<std::string>& args, bool metrics) {
  std::map<std::string, nlohmann::json> out;
  for (const auto& kv : args) {
    const auto dot = kv.find('.'), eq = kv.find('=');
    CANDELA_CHECK(dot != std::string::npos && eq != std::string::npos && dot < eq,
                  metrics ? "--metric-option" : "--method-option", " takes NAME.KEY=VALUE (e.g. ",
                  metrics ? "road.noise=0.05" : "integrated_gradients.n_steps=32", "), got '", kv, "'.");
    const std::string name = kv.substr(0, dot), key = kv.substr(dot + 1, eq - dot - 1);
    const nlohmann::json& schema =
        metrics ? MetricRegistry::builtin().get(name).schema : Registry::builtin().get(name).schema;
    out[name][key] = parse_option_value(schema, name, key, kv.substr(eq + 1));
  }
  return out;
}

struct EvaluateArgs {
  std::string model, data, labels, masks, methods, metrics, out, baseline = "zeros";
  std::vector<std::string> method_options, metric_options;
  int64_t chunk = 8, bootstrap = 1000, seed = 0, max_samples = 0;
  bool quiet = false;
  SpecFlags spec;
  EvalOptions eval;
};

std::string duration(double s) {
  if (s < 0) return "?";
  std::ostringstream o;
  if (s >= 3600) o << static_cast<int>(s / 3600) << "h";
  if (s >= 60) o << static_cast<int>(std::fmod(s, 3600) / 60) << "m";
  o << static_cast<int>(std::fmod(s, 60)) << "s";
  return o.str();
}

int run_evaluate(const EvaluateArgs& a) {
  EvaluateConfig c;
  c.methods = split_names(a.methods);
  c.metrics = split_names(a.metrics);
  c.method_options = named_options(a.method_options, false);
  c.metric_options = named_options(a.metric_options, true);
  c.baseline = Baseline::parse(a.baseline);
  c.chunk = a.chunk;
  c.bootstrap = a.bootstrap;
  c.seed = a.seed;
  c.eval = a.eval;
  c.eval.cancel = g_interrupt;
  c.validate();
  Model model = Model::load(a.model);
  a.spec.apply(model);
  EvaluateData data = load_data(a.data, a.labels, a.masks, model, a.max_samples);
  infer_layout_from(model, data.inputs);
  const bool tty = !a.quiet && isatty(STDERR_FILENO);
  if (tty) {
    c.progress = [](const EvaluateProgress& p) {
      const int width = 30;
      const double frac = p.total > 0 ? static_cast<double>(p.done) / p.total : 0.0;
      const int fill = static_cast<int>(frac * width);
      std::fprintf(stderr, "\r%-24.24s [%s%s] %3d%% %lld/%lld  elapsed %s  left %s   ", p.stage.c_str(),
                   std::string(fill, '#').c_str(), std::string(width - fill, '.').c_str(), static_cast<int>(frac * 100),
                   (long long)p.done, (long long)p.total, duration(p.elapsed_seconds).c_str(),
                   duration(p.remaining_seconds).c_str());
      std::fflush(stderr);
    };
  }
  nlohmann::json r = evaluate(model, data, c, a.out);
  if (tty) std::fprintf(stderr, "\r%100s\r", "");
  if (!a.quiet) {
    std::cout << read_file(a.out + "/summary.md", 1 << 22);
    std::cout << "wrote " << a.out << "/results.csv, results.json, summary.md\n";
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

struct AuditArgs {
  std::string model, data, labels, method = "integrated_gradients", out, baseline = "zeros";
  std::vector<std::string> options;
  double window = 0.125, factor = 5.0, min_fraction = 0.3;
  int64_t clusters = 3, seed = 0, max_samples = 0;
  bool quiet = false;
  SpecFlags spec;
  EvalOptions eval;
};

int run_audit(const AuditArgs& a) {
  AuditConfig c;
  c.method = a.method;
  const MethodInfo& info = Registry::builtin().get(a.method);
  for (const auto& kv : a.options) {
    auto eq = kv.find('=');
    CANDELA_CHECK(eq != std::string::npos && eq > 0, "--option takes KEY=VALUE, got '", kv, "'.");
    c.method_options[kv.substr(0, eq)] = parse_option_value(info.schema, a.method, kv.substr(0, eq), kv.substr(eq + 1));
  }
  c.baseline = Baseline::parse(a.baseline);
  c.window = a.window;
  c.factor = a.factor;
  c.min_fraction = a.min_fraction;
  c.clusters = a.clusters;
  c.seed = a.seed;
  c.eval = a.eval;
  c.eval.cancel = g_interrupt;
  Model model = Model::load(a.model);
  a.spec.apply(model);
  EvaluateData data = load_data(a.data, a.labels, "", model, a.max_samples);
  infer_layout_from(model, data.inputs);
  nlohmann::json r = audit_shortcuts(model, data, c);
  std::filesystem::create_directories(a.out);
  write_file_atomic(a.out + "/audit.json", r.dump(2));
  if (!a.quiet) {
    std::cout << (r["suspected"].get<bool>() ? "SUSPECTED SHORTCUT: " : "no shortcut found: ")
              << r["evidence"].get<std::string>() << "\nwrote " << a.out << "/audit.json\n";
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

int run_info(const std::string& model_path, const SpecFlags& spec_flags, bool json) {
  Model model = Model::load(model_path);
  spec_flags.apply(model);
  const auto& spec = model.input_spec();
  nlohmann::json out = {{"model", model_path}, {"input", spec.to_json()}, {"output_kind", model.output_kind()},
                        {"classes", model.class_names().size()}};
  std::vector<LayerInfo> layers;
  std::vector<int64_t> out_shape;
  if (!spec.shape.empty()) {
    std::vector<int64_t> shape = {1};
    shape.insert(shape.end(), spec.shape.begin(), spec.shape.end());
    at::NoGradGuard no_grad;
    auto y = model.forward(at::zeros(shape));
    out_shape.assign(y.sizes().begin(), y.sizes().end());
    layers = model.layers();
  }
  if (json) {
    out["output_shape"] = out_shape;
    out["layers"] = nlohmann::json::array();
    for (const auto& l : layers)
      out["layers"].push_back({{"name", l.name}, {"type", l.type}, {"output_shape", l.output_shape}, {"calls", l.calls}});
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << "model   " << model_path << "\n";
  std::cout << "input   " << (spec.shape.empty() ? "unknown shape (give --input-shape)" : join(spec.shape))
            << (spec.layout.empty() ? "" : " " + spec.layout) << "\n";
  if (!spec.mean.empty()) std::cout << "        normalised with mean/std from the model's spec\n";
  if (!out_shape.empty()) std::cout << "output  " << join(out_shape) << " " << model.output_kind() << "\n";
  if (!model.class_names().empty()) std::cout << "classes " << model.class_names().size() << "\n";
  if (!layers.empty()) {
    std::cout << "\nlayers (" << layers.size() << ")\n";
    size_t w = 5;
    for (const auto& l : layers) w = std::max(w, l.name.size());
    for (const auto& l : layers)
      std::cout << "  " << std::left << std::setw(static_cast<int>(w) + 2) << l.name << std::setw(22) << l.type
                << (l.output_shape.empty() ? "(not a tensor)" : join(l.output_shape))
                << (l.calls > 1 ? "  (runs " + std::to_string(l.calls) + " times; the last output is tapped)" : "")
                << "\n";
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Candela: explain the predictions of deep-learning models.\n\n"
               "Example:\n  candela explain --model digits_cnn.pt --input digit_0.png --method integrated_gradients --out out/\n"};
  app.require_subcommand(1);
  cancel_on_interrupt();
  app.fallthrough();  // global flags such as --threads may follow the subcommand
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--threads", threads, "Intra-op threads (default: all cores)")->check(CLI::Range(1, 1024));

  // explain
  ExplainArgs ea;
  auto* explain = app.add_subcommand("explain", "Explain a model's prediction for an input.");
  explain->footer(
      "Examples:\n"
      "  candela explain --model digits_cnn.pt --input digit_0.png --method integrated_gradients --out out/ig\n"
      "  candela explain --model mlp.pt --input rows.npy --method noise_tunnel --option nt_samples=20 \\\n"
      "      --option base_method=integrated_gradients --target 1 --out out/sg\n"
      "  candela explain --model resnet18.pt --input cat.png --method grad_cam --layer layer4 --out out/cam\n"
      "  candela explain --model mlp.pt --input rows.csv --background train.csv --method kernel_shap --out out/shap\n"
      "  candela explain --model resnet18.pt --input cat.png --method lime --features slic:20 --out out/lime\n"
      "  candela explain --model resnet18.pt --input cat.png --method lrp --composite epsilon_gamma_box --out out/lrp\n"
      "Writes attributions.npy, attribution.json and, for images, heatmap.png and heatmap_raw.png.");
  explain->add_option("--model", ea.model, "TorchScript model file (.pt); a sidecar .json may describe its input")->required();
  explain->add_option("--input", ea.input, "Input: an image (PNG, JPEG, ...) or a .npy array [N, ...]")->required();
  explain->add_option("--method", ea.method, "Attribution method (see `candela methods`)")->required();
  explain->add_option("--target", ea.target, "Class to explain: top1, an index, a class name, or one index per sample (1,4,2)");
  explain->add_option("--option", ea.options, "Method option KEY=VALUE (repeatable)");
  explain->add_option("--layer", ea.layers, "Layer to explain or tap, as `candela info` names it (repeatable)");
  explain->add_option("--composite", ea.composite,
                      "LRP composite: epsilon_plus, epsilon_gamma_box, ... (see `candela methods`) or a JSON file");
  explain->add_option("--baseline", ea.baseline, "zeros, constant:V, blur:SIGMA, uniform:LO,HI, FILE.npy or dist:FILE.npy");
  explain->add_option("--out", ea.out, "Output folder")->required();
  explain->add_option("--features", ea.features,
                      "Feature groups for perturbation methods: each, grid:CELL, slic:REGION_SIZE, "
                      "felzenszwalb:SCALE, or FILE.npy of ids");
  explain->add_option("--background", ea.background,
                      "Background data (.csv or .npy rows): the baseline distribution for SHAP, LIME, ...");
  explain->add_option("--feature-names", ea.feature_names, "Names of tabular features: a,b,c or FILE.txt");
  explain->add_option("--max-memory", ea.eval.max_memory_mb, "Memory budget per batch in MB (sets the batch size)");
  explain->add_option("--batch-size", ea.eval.max_batch_size, "Fixed rows per model call (0: automatic)");
  explain->add_option("--device", ea.device, "cpu, cuda, cuda:N");
  explain->add_option("--sign", ea.heatmap.sign, "Heatmap sign: auto, signed, absolute, positive, negative");
  explain->add_option("--colormap", ea.heatmap.colormap, "Heatmap colormap: bwr, coolwarm, inferno, viridis, jet, gray");
  explain->add_option("--clip-percentile", ea.heatmap.clip_percentile, "Clip the heatmap at this percentile of |value|");
  explain->add_option("--alpha", ea.heatmap.alpha, "Overlay opacity in [0, 1]");
  explain->add_flag("--quiet", ea.quiet, "No progress bar or summary");
  ea.spec.add(explain);

  // methods
  bool methods_json = false;
  auto* methods = app.add_subcommand("methods", "List every method with its options and defaults.");
  methods->footer("Example:\n  candela methods\n  candela methods --json > methods.json");
  methods->add_flag("--json", methods_json, "Print the registry as JSON");

  // info
  std::string info_model;
  bool info_json = false;
  SpecFlags info_spec;
  auto* info = app.add_subcommand("info", "Show a model's input, output and layers with their output shapes.");
  info->footer("Example:\n  candela info resnet18.pt\n  candela info model.pt --input-shape 3,224,224 --json");
  info->add_option("model", info_model, "TorchScript model file")->required();
  info->add_flag("--json", info_json, "Print as JSON");
  info_spec.add(info);

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
  evaluate_cmd->add_option("--model", va.model, "TorchScript model file (.pt)")->required();
  evaluate_cmd->add_option("--data", va.data, "Samples: a .npy/.csv array [N, ...], or a folder of images")->required();
  evaluate_cmd->add_option("--labels", va.labels, ".npy of class indices to explain (default: the model's top-1)");
  evaluate_cmd->add_option("--masks", va.masks, ".npy of ground-truth masks [N, H, W] (nonzero = relevant)");
  evaluate_cmd->add_option("--methods", va.methods, "Methods, comma-separated (see `candela methods`)")->required();
  evaluate_cmd->add_option("--metrics", va.metrics, "Metrics, comma-separated (see `candela metrics`)")->required();
  evaluate_cmd->add_option("--method-option", va.method_options, "METHOD.KEY=VALUE (repeatable)");
  evaluate_cmd->add_option("--metric-option", va.metric_options, "METRIC.KEY=VALUE (repeatable)");
  evaluate_cmd->add_option("--baseline", va.baseline, "Baseline for methods and metrics that use one");
  evaluate_cmd->add_option("--out", va.out, "Output folder (resumed if it holds a run with the same settings)")->required();
  evaluate_cmd->add_option("--chunk", va.chunk, "Samples per unit of work and journal entry");
  evaluate_cmd->add_option("--bootstrap", va.bootstrap, "Bootstrap resamples for the 95% intervals");
  evaluate_cmd->add_option("--seed", va.seed, "Seed of the bootstrap");
  evaluate_cmd->add_option("--max-samples", va.max_samples, "Use only the first N samples")->check(CLI::NonNegativeNumber);
  evaluate_cmd->add_option("--max-memory", va.eval.max_memory_mb, "Memory budget per batch in MB");
  evaluate_cmd->add_option("--batch-size", va.eval.max_batch_size, "Fixed rows per model call (0: automatic)");
  evaluate_cmd->add_flag("--quiet", va.quiet, "No progress bar or summary");
  va.spec.add(evaluate_cmd);

  // metrics
  bool metrics_json = false;
  auto* metrics_cmd = app.add_subcommand("metrics", "List every evaluation metric with its options and defaults.");
  metrics_cmd->footer("Example:\n  candela metrics\n  candela metrics --json > metrics.json");
  metrics_cmd->add_flag("--json", metrics_json, "Print as JSON");

  // audit
  AuditArgs aa;
  auto* audit_cmd = app.add_subcommand("audit", "Look for a shortcut: a small image region most explanations rely on.");
  audit_cmd->footer(
      "Example:\n"
      "  candela audit --model model.pt --data x_test.npy --method integrated_gradients --out audit/\n"
      "Writes audit.json: the window holding the most relevance, its share against its area, per class and\n"
      "per cluster of explanations (k-means), and whether it is a suspected shortcut.");
  audit_cmd->add_option("--model", aa.model, "TorchScript model file (.pt)")->required();
  audit_cmd->add_option("--data", aa.data, "Samples: a .npy array [N, ...] or a folder of images")->required();
  audit_cmd->add_option("--labels", aa.labels, ".npy of classes to explain (default: the model's top-1)");
  audit_cmd->add_option("--method", aa.method, "Attribution method");
  audit_cmd->add_option("--option", aa.options, "Method option KEY=VALUE (repeatable)");
  audit_cmd->add_option("--baseline", aa.baseline, "Baseline for the method");
  audit_cmd->add_option("--window", aa.window, "Window side as a fraction of the image side");
  audit_cmd->add_option("--factor", aa.factor, "Relevance share over area share that counts as concentrated");
  audit_cmd->add_option("--min-fraction", aa.min_fraction, "Share of samples that makes it a suspected shortcut");
  audit_cmd->add_option("--clusters", aa.clusters, "k of the k-means over the explanations");
  audit_cmd->add_option("--seed", aa.seed, "Seed of the clustering");
  audit_cmd->add_option("--max-samples", aa.max_samples, "Use only the first N samples")->check(CLI::NonNegativeNumber);
  audit_cmd->add_option("--out", aa.out, "Output folder")->required();
  audit_cmd->add_flag("--quiet", aa.quiet, "No summary");
  aa.spec.add(audit_cmd);

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
    if (*explain) {
      ea.baseline_given = explain->count("--baseline") > 0;
      return run_explain(ea);
    }
    if (*methods) return run_methods(methods_json);
    if (*info) return run_info(info_model, info_spec, info_json);
    if (*evaluate_cmd) return run_evaluate(va);
    if (*metrics_cmd) return run_metrics(metrics_json);
    if (*audit_cmd) return run_audit(aa);
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
