#include "candela/app/report.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/registry.h"
#include "candela/detail/text.h"
#include "candela/eval/metrics.h"
#include "candela/io/file.h"
#include "candela/render/export.h"
#include "candela/render/heatmap.h"
#include "candela/render/words.h"
#include "candela/text/tokens.h"

namespace candela {
// Named, not anonymous: this file shares a unity unit with render/*.cpp.
namespace report_impl {

namespace fs = std::filesystem;
using nlohmann::json;

std::string base64(const void* data, size_t n) {
  static const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v = (uint32_t(p[i]) << 16) | (i + 1 < n ? uint32_t(p[i + 1]) << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    out += digits[(v >> 18) & 63];
    out += digits[(v >> 12) & 63];
    out += i + 1 < n ? digits[(v >> 6) & 63] : '=';
    out += i + 2 < n ? digits[v & 63] : '=';
  }
  return out;
}

// Little-endian float32, as the web UI's Float32Array reads it (x86-64 and ARM are little-endian).
std::string base64_floats(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU, at::kFloat).contiguous();
  return base64(c.data_ptr<float>(), static_cast<size_t>(c.numel()) * sizeof(float));
}

// A number for JSON: NaN and infinities become null.
json number(double v) { return std::isfinite(v) ? json(v) : json(); }

json tensor_row(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous().flatten();
  json out = json::array();
  for (int64_t i = 0; i < c.numel(); ++i) out.push_back(number(c.data_ptr<double>()[i]));
  return out;
}

// attribution.json restricted to sample i: the per-sample arrays hold one entry, the rest as it is.
json slice_meta(const json& meta, int64_t i) {
  json out = meta;
  for (const char* k : {"output", "predicted", "targets", "target_names", "convergence_delta", "output_change", "summary",
                        "features", "heatmaps"}) {
    if (!meta.contains(k) || !meta[k].is_array()) continue;
    out[k] = i < static_cast<int64_t>(meta[k].size()) ? json::array({meta[k][static_cast<size_t>(i)]}) : json::array();
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// The checks that may fail for a method without failing the report: recorded as {"error": ...}.
template <class F>
json guarded(F f) {
  try {
    return f();
  } catch (const Cancelled&) {
    throw;
  } catch (const Error& e) {
    return json{{"error", first_line(e.what())}};
  } catch (const c10::Error& e) {
    return json{{"error", first_line(e.what_without_backtrace())}};
  }
}

// A token model's method that attributes to the embedding ([N, L, D]) reduced to one value per
// token as `candela explain` reduces it, so the metrics that explain again (the randomisation
// check) compare like with like.
class TokenValues : public Explainer {
 public:
  TokenValues(std::shared_ptr<Explainer> inner, std::string reduction)
      : inner_(std::move(inner)), reduction_(std::move(reduction)) {}
  std::string name() const override { return inner_->name(); }
  json options() const override { return inner_->options(); }
  bool uses_baseline() const override { return inner_->uses_baseline(); }
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override {
    Attribution a = inner_->attribute(evaluator, request);
    const int64_t n = request.inputs.size(0), l = request.inputs.size(1);
    if (a.values.dim() >= 3 && a.values.size(0) == n && a.values.size(1) == l) a.values = reduce_embedding(a.values, reduction_);
    return a;
  }

 private:
  std::shared_ptr<Explainer> inner_;
  std::string reduction_;
};

struct MethodRun {
  std::string name;
  ExplainResult result;
  ExplainContext context;
  json meta;    // attribution.json
  json tokens;  // tokens.json (token models), else null
  at::Tensor map;  // feature_map(...).values [N, P], undefined when the values have no per-input map
  FeatureMap grid;
  std::string map_error;
};

ExplainJob explain_job_for(const ReportJob& job, const std::string& method) {
  const MethodInfo& info = Registry::builtin().get(method);
  ExplainJob e;
  e.model = job.model;
  e.input = job.input;
  e.method = method;
  e.target = job.target;
  if (info.uses_baseline) e.baseline = job.baseline;
  e.features = job.features;
  if (info.schema.contains("layers")) e.layers = job.layers;
  if (job.method_options.contains(method)) e.options = job.method_options[method];
  e.budget = job.budget;
  e.spec = job.spec;
  return e;
}

std::string input_label(const std::string& input) {
  if (fs::exists(input)) return fs::path(input).filename().string();
  return input.size() > 60 ? input.substr(0, 57) + "..." : input;
}

std::string num_text(const json& v) {
  if (!v.is_number()) return "–";
  return words_number(v.get<double>());
}

// One picture per sample: the input, then each method's map over it, side by side in one
// tensor, so normalise_map gives all of them one colour scale.
Artifact heatmap_strip(const std::string& name, const std::vector<MethodRun>& runs, const at::Tensor& display,
                       int64_t i) {
  const int64_t h = display.size(2), w = display.size(3), gap = std::max<int64_t>(1, w / 16);
  std::vector<at::Tensor> maps, images;
  const at::Tensor image = display[i].to(at::kFloat);
  const at::Tensor blank_image = at::ones({image.size(0), h, gap});
  const at::Tensor zero_map = at::zeros({h, gap});
  maps.push_back(at::zeros({h, w}));
  images.push_back(image);
  for (const auto& r : runs) {
    maps.push_back(zero_map);
    images.push_back(blank_image);
    maps.push_back(r.map.defined() ? r.map[i].view({h, w}).to(at::kFloat) : at::zeros({h, w}));
    images.push_back(image);
  }
  HeatmapOptions o;
  o.sign = "signed";
  o.alpha = 0.7;
  return render_png_overlay(name, at::cat(maps, 1), at::cat(images, 2), o);
}

std::vector<Artifact> markdown_artifacts(const json& data, const std::vector<MethodRun>& runs, const LoadedInput& input,
                                         int64_t kept) {
  std::vector<Artifact> files;
  std::ostringstream md;
  const std::string kind = data["kind"];
  md << "# " << data["title"].get<std::string>() << "\n\n";
  md << "Model `" << data["model"]["file"].get<std::string>() << "` (" << data["model"]["output_kind"].get<std::string>()
     << "), input `" << data["input"]["label"].get<std::string>() << "`";
  if (data["input"]["samples"] != data["input"]["shown"])
    md << " (the first " << kept << " of " << data["input"]["samples"] << " samples)";
  md << ". Made by `candela report`.\n\n";
  md << "| method | family | reference |\n|---|---|---|\n";
  for (const auto& m : data["methods"])
    md << "| " << m["name"].get<std::string>() << " | " << m["family"].get<std::string>() << " | "
       << m["reference"].get<std::string>() << " |\n";
  for (int64_t i = 0; i < kept; ++i) {
    const json& s = data["samples"][static_cast<size_t>(i)];
    md << "\n## Sample " << i << ": " << s["label"].get<std::string>() << "\n\n### Prediction\n\n| rank | class | score |\n|---|---|---|\n";
    int rank = 1;
    for (const auto& t : s["prediction"])
      md << "| " << rank++ << " | " << t.value("name", std::to_string(t["class"].get<int64_t>())) << " | "
         << num_text(t["score"]) << " |\n";
    if (kind == "image") {
      const std::string png = "sample_" + std::to_string(i) + "_heatmaps.png";
      files.push_back(heatmap_strip(png, runs, input.display, i));
      md << "\n### Attributions\n\n![input, then ";
      for (size_t m = 0; m < runs.size(); ++m) md << (m ? ", " : "") << runs[m].name;
      md << "](" << png << ")\n\nLeft to right: the input, then ";
      for (size_t m = 0; m < runs.size(); ++m) md << (m ? ", " : "") << runs[m].name;
      md << "; one shared colour scale (red raises the target's score, blue lowers it).\n";
    } else if (kind == "tabular") {
      md << "\n### Attributions (largest |attribution| of " << runs.front().name << " first)\n\n| feature | value |";
      for (const auto& r : runs) md << " " << r.name << " |";
      md << "\n|---|---|";
      for (size_t m = 0; m < runs.size(); ++m) md << "---|";
      md << "\n";
      const json& features = s["results"][0]["attribution"]["features"];
      if (features.is_array() && !features.empty()) {
        size_t shown = 0;
        for (const auto& f : features[0]) {
          if (shown++ == 15) break;
          const int64_t index = f["index"];
          md << "| " << f["feature"].get<std::string>() << " | " << num_text(f["value"]) << " |";
          for (const auto& r : runs)
            md << " " << (r.map.defined() ? words_number(r.map[i][index].item<double>()) : "–") << " |";
          md << "\n";
        }
      }
    } else if (kind == "text") {
      md << "\n### Tokens\n\n";
      for (const auto& res : s["results"]) {
        if (!res.contains("tokens")) continue;
        md << "- " << res["method"].get<std::string>() << ": ";
        for (const auto& t : res["tokens"]["tokens"])
          if (t["token"] != "[PAD]") md << "`" << t["token"].get<std::string>() << "` " << num_text(t["value"]) << " ";
        md << "\n";
      }
    }
    md << "\n### Can I trust this?\n\n| method | target | completeness delta | deletion AUC (lower is better) | "
          "insertion AUC (higher is better) | randomisation similarity (lower is better) | warnings |\n|---|---|---|---|---|---|---|\n";
    for (const auto& res : s["results"]) {
      const json& a = res["attribution"];
      const json target = a.contains("target_names") && !a["target_names"].empty() ? a["target_names"][0]
                          : a.contains("targets") && !a["targets"].empty() ? a["targets"][0] : json("–");
      md << "| " << res["method"].get<std::string>() << " | " << (target.is_string() ? target.get<std::string>() : target.dump())
         << " | " << (a.contains("convergence_delta") && a["convergence_delta"].is_array() && !a["convergence_delta"].empty() ? num_text(a["convergence_delta"][0]) : "–")
         << " | ";
      const json& c = res["curves"];
      if (c.contains("error")) md << "– (" << c["error"].get<std::string>() << ") | – | ";
      else md << num_text(c["deletion_auc"]) << " | " << num_text(c["insertion_auc"]) << " | ";
      if (!res.contains("randomisation")) md << "not run | ";
      else if (res["randomisation"].contains("error")) md << "– (" << res["randomisation"]["error"].get<std::string>() << ") | ";
      else md << num_text(res["randomisation"]["similarity"]) << " | ";
      std::string warnings;
      for (const auto& w : a.value("warnings", json::array())) warnings += (warnings.empty() ? "" : "; ") + w.value("message", std::string());
      md << (warnings.empty() ? "none" : warnings) << " |\n";
    }
    if (!s["agreement"].empty()) {
      md << "\n| methods | Spearman ρ | top-10% IoU |\n|---|---|---|\n";
      for (const auto& g : s["agreement"])
        md << "| " << g["a"].get<std::string>() << " / " << g["b"].get<std::string>() << " | " << num_text(g["spearman"]) << " | "
           << num_text(g["top_iou"]) << " |\n";
    }
    md << "\n### In words\n";
    if (!s["caveats"].empty()) {
      md << "\n";
      for (const auto& sentence : s["caveats"]) md << "- " << sentence["text"].get<std::string>() << "\n";
    }
    for (const auto& res : s["results"]) {
      const json& summary = res["attribution"].value("summary", json::array());
      if (summary.empty()) continue;
      md << "\n" << res["method"].get<std::string>() << ":\n\n";
      for (const auto& sentence : summary[0]["sentences"]) md << "- " << sentence["text"].get<std::string>() << "\n";
    }
  }
  files.insert(files.begin(), render_markdown("report.md", md.str()));
  files.push_back(render_json("report.json", data));
  return files;
}

}  // namespace report_impl

using namespace report_impl;

std::string find_web_dir() {
  namespace sfs = std::filesystem;
  std::error_code ec;
  const sfs::path exe = sfs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  for (const sfs::path& c : {exe.parent_path() / "../share/candela/web", exe.parent_path() / "../../web/dist"})
    if (sfs::exists(c / "report.html", ec)) return sfs::weakly_canonical(c, ec).string();
  return "";
}

std::string fill_report_template(const std::string& page, const json& data) {
  const std::string open = "<script type=\"application/json\" id=\"candela-report\">";
  const auto at = page.find(open);
  CANDELA_CHECK(at != std::string::npos && page.find(open, at + 1) == std::string::npos,
                "the report template has no single <script type=\"application/json\" id=\"candela-report\">; rebuild "
                "the web UI (make build, or cmake -DCANDELA_BUILD_WEB=ON and build the web_ui target).");
  const auto close = page.find("</script>", at + open.size());
  CANDELA_CHECK(close != std::string::npos, "the report template's data <script> is not closed; rebuild the web UI.");
  // '<' occurs in JSON only inside strings, where \u003c means the same: no "</script>" can end
  // the data early.
  std::string text;
  for (char c : data.dump()) {
    if (c == '<') text += "\\u003c";
    else text += c;
  }
  return page.substr(0, at + open.size()) + text + page.substr(close);
}

namespace {

std::string report_template(const ReportJob& job) {
  const std::string dir = job.web.empty() ? find_web_dir() : job.web;
  const std::string hint =
      "build the web UI first: `make build`, or configure with -DCANDELA_BUILD_WEB=ON and build the web_ui target "
      "(it needs node and npm); or use --format md";
  CANDELA_CHECK_T(IoError, !dir.empty(), "the web UI's report template (web/dist/report.html) was not found next to ",
                  "this candela; ", hint, ".");
  const std::filesystem::path p = std::filesystem::path(dir) / "report.html";
  CANDELA_CHECK_T(IoError, std::filesystem::exists(p), "'", p.string(), "' does not exist; ", hint, ".");
  return read_file(p.string(), 64 << 20);
}

}  // namespace

void validate(const ReportJob& job) {
  CANDELA_CHECK(!job.methods.empty(), "give at least one method with --methods a,b,c (see `candela methods`).");
  std::set<std::string> seen;
  for (const auto& m : job.methods) {
    CANDELA_CHECK(seen.insert(m).second, "--methods names ", m, " twice; keep one.");
    Registry::builtin().get(m);  // unknown: "did you mean"
  }
  CANDELA_CHECK(job.format == "html" || job.format == "md", "--format must be html or md, got '", job.format, "'.");
  CANDELA_CHECK(job.top_k >= 1, "--top-k must be >= 1, got ", job.top_k, ".");
  CANDELA_CHECK(job.max_samples >= 1, "--max-samples must be >= 1, got ", job.max_samples, ".");
  CANDELA_CHECK(job.curve_steps >= 1 && job.curve_steps <= 1000, "--curve-steps must be in [1, 1000], got ",
                job.curve_steps, ".");
  CANDELA_CHECK(job.method_options.is_object(), "method_options must be a JSON object {\"METHOD\": {\"KEY\": VALUE}}.");
  for (const auto& [name, o] : job.method_options.items())
    CANDELA_CHECK(seen.count(name), "options are given for ", name, ", which is not among --methods (",
                  [&] { std::string s; for (const auto& m : job.methods) s += (s.empty() ? "" : ",") + m; return s; }(), ").");
  bool any_layers = job.layers.empty();
  for (const auto& m : job.methods) {
    validate(explain_job_for(job, m));
    any_layers = any_layers || Registry::builtin().get(m).schema.contains("layers");
  }
  CANDELA_CHECK(any_layers, "--layer is given but none of the methods takes a layer; drop it.");
  if (job.format == "html") report_template(job);
}

ReportResult run(const ReportJob& job, const RunControl& control) {
  validate(job);
  const std::string page = job.format == "html" ? report_template(job) : "";

  // Each method as `candela explain` runs it, keeping the loaded model, input and explainer.
  std::vector<MethodRun> runs;
  for (const auto& m : job.methods) {
    MethodRun r;
    r.name = m;
    r.result = run(explain_job_for(job, m), control, &r.context);
    for (const auto& a : r.result.artifacts) {
      if (a.name == "attribution.json") r.meta = json::parse(a.bytes);
      if (a.name == "tokens.json") r.tokens = json::parse(a.bytes);
    }
    runs.push_back(std::move(r));
  }
  const Model& model = *runs.front().context.model;
  const LoadedInput& input = runs.front().context.input;
  const at::Tensor batch = runs.front().context.request.inputs.to(at::kCPU);
  const int64_t n = batch.size(0), kept = std::min(n, job.max_samples);
  const InputSpec& spec = model.input_spec();
  const bool text = spec.layout == "NL", image = input.display.defined(), tabular = !text && !image && spec.layout == "NC";
  const std::string kind = text ? "text" : image ? "image" : tabular ? "tabular" : "array";

  for (auto& r : runs) {
    const Attribution& a = r.result.attribution;
    try {
      r.grid = feature_map(a.values.to(at::kCPU), batch, spec);
      if (r.grid.values.size(0) == n) r.map = r.grid.values;
      else r.map_error = "the values are not one map per sample";
    } catch (const Error& e) {
      r.map_error = first_line(e.what());
    } catch (const c10::Error& e) {
      r.map_error = first_line(e.what_without_backtrace());
    }
    if (r.map.defined() && image && (r.grid.height != input.display.size(2) || r.grid.width != input.display.size(3)))
      r.map_error = "the map is not at the input's resolution";
    if (!r.map_error.empty()) r.map = at::Tensor();
  }

  // The trust figures per method, for the first `kept` samples, with the library's metrics.
  const auto& metrics = MetricRegistry::builtin();
  std::vector<json> curves(runs.size()), randomisation(runs.size());
  std::vector<std::shared_ptr<Explainer>> token_explainers;
  for (size_t mi = 0; mi < runs.size(); ++mi) {
    MethodRun& r = runs[mi];
    const Attribution& a = r.result.attribution;
    if (a.targets.size() != static_cast<size_t>(n)) {
      curves[mi] = json{{"error", "the method explains no class (a function target)"}};
      randomisation[mi] = curves[mi];
      continue;
    }
    MetricInput in;
    in.model = r.context.model.get();
    in.inputs = r.context.request.inputs.slice(0, 0, kept);
    in.attributions = a.values.slice(0, 0, kept);
    in.targets = at::tensor(std::vector<int64_t>(a.targets.begin(), a.targets.begin() + kept), at::kLong);
    in.explainer = r.context.explainer.get();
    if (text) {
      token_explainers.push_back(std::make_shared<TokenValues>(r.context.explainer, ExplainJob{}.token_reduction));
      in.explainer = token_explainers.back().get();
    }
    in.request = r.context.request;
    in.request.inputs = in.inputs;
    in.request.target = Target::indices(std::vector<int64_t>(a.targets.begin(), a.targets.begin() + kept));
    if (in.request.feature_mask.defined() && in.request.feature_mask.dim() == batch.dim() &&
        in.request.feature_mask.size(0) == n)
      in.request.feature_mask = in.request.feature_mask.slice(0, 0, kept);
    in.eval = r.context.request.eval;
    if (!r.map_error.empty()) {
      curves[mi] = json{{"error", r.map_error}};
    } else {
      // Features removed in the map's order (to zeros) or inserted into zeros, as the web UI's
      // trust panel draws them; the areas are the deletion and insertion metrics' (RISE's auc).
      curves[mi] = guarded([&] {
        const json options = {{"n_steps", job.curve_steps}, {"substrate", "zeros"}};
        json out = json::object();
        for (const char* name : {"deletion", "insertion"}) {
          json details;
          const at::Tensor auc = metrics.get(name).create(options)->score(in, &details);
          out[name] = details["curve"];
          out[std::string(name) + "_auc"] = tensor_row(auc);
        }
        out["steps"] = job.curve_steps;
        out["substrate"] = "zeros";
        return out;
      });
    }
    if (job.randomisation) {
      if (control.note)
        control.note("randomisation check of " + r.name +
                     (job.randomisation_mode == "full" ? ": one more explanation with every layer randomised"
                                                       : ": one more explanation per layer with parameters") +
                     " (--no-randomisation skips it)");
      randomisation[mi] = guarded([&] {
        auto metric =
            metrics.get("model_parameter_randomisation").create(json{{"mode", job.randomisation_mode}});
        json details;
        const at::Tensor s = metric->score(in, &details);
        return json{{"similarity", tensor_row(s)},
                    {"layers", details.value("layers", json::array())},
                    {"similarity_per_layer", details.value("similarity_per_layer", json::array())},
                    {"options", metric->options()}};
      });
    }
  }

  // Agreement of every pair of maps of one size: Spearman's rank correlation and top-10% IoU.
  std::vector<json> agreement(static_cast<size_t>(kept), json::array());
  for (size_t i = 0; i < runs.size(); ++i)
    for (size_t j = i + 1; j < runs.size(); ++j) {
      if (!runs[i].map.defined() || !runs[j].map.defined() || runs[i].map.sizes() != runs[j].map.sizes()) continue;
      const at::Tensor a = runs[i].map.slice(0, 0, kept), b = runs[j].map.slice(0, 0, kept);
      const at::Tensor rho = spearman_rows(a, b).to(at::kDouble), iou = top_fraction_iou_rows(a, b, 0.1).to(at::kDouble);
      for (int64_t s = 0; s < kept; ++s)
        agreement[static_cast<size_t>(s)].push_back({{"a", runs[i].name},
                                                     {"b", runs[j].name},
                                                     {"spearman", number(rho[s].item<double>())},
                                                     {"top_iou", number(iou[s].item<double>())}});
    }

  // The prediction, from the same loaded model and input.
  const json prediction = predict_top_k(model, batch.slice(0, 0, kept), job.top_k);

  json data;
  data["format"] = "candela-report";
  data["version"] = 1;
  data["kind"] = kind;
  data["title"] = job.title.empty() ? model.name() + " — " + input_label(job.input) : job.title;
  data["model"] = {{"name", model.name()},
                   {"file", std::filesystem::path(job.model).filename().string()},
                   {"output_kind", model.output_kind()},
                   {"class_names", model.class_names()},
                   {"input_spec", runs.front().meta.value("input_spec", json::object())}};
  data["input"] = {{"label", input_label(job.input)}, {"samples", n}, {"shown", kept}};
  data["settings"] = {{"target", job.target},       {"top_k", job.top_k},
                      {"curve_steps", job.curve_steps}, {"randomisation", job.randomisation},
                      {"randomisation_mode", job.randomisation_mode},
                      {"baseline", job.baseline.empty() ? "zeros" : job.baseline},
                      {"agreement_top_fraction", 0.1}};
  json methods = json::array();
  for (const auto& r : runs) {
    const MethodInfo& info = Registry::builtin().get(r.name);
    methods.push_back({{"name", r.name},
                       {"family", info.family},
                       {"description", info.description},
                       {"reference", info.reference},
                       {"completeness", info.completeness}});
  }
  data["methods"] = methods;
  json samples = json::array();
  for (int64_t i = 0; i < kept; ++i) {
    json s;
    s["index"] = i;
    s["label"] = text && i < static_cast<int64_t>(input.tokens.size()) ? json(input_label(job.input))
                 : n > 1 ? json("row " + std::to_string(i)) : json(input_label(job.input));
    if (image) {
      const at::Tensor d = (input.display[i].clamp(0, 1) * 255).round().to(at::kByte).permute({1, 2, 0}).contiguous();
      s["image"] = {{"h", d.size(0)}, {"w", d.size(1)}, {"c", d.size(2)}, {"u8", base64(d.data_ptr<uint8_t>(), d.numel())}};
    } else if (!text) {
      s["values"] = {{"shape", batch[i].sizes().vec()}, {"f32", base64_floats(batch[i])}};
    }
    s["prediction"] = prediction["samples"][static_cast<size_t>(i)]["top"];
    json results = json::array();
    for (size_t mi = 0; mi < runs.size(); ++mi) {
      const MethodRun& r = runs[mi];
      json res;
      res["method"] = r.name;
      res["attribution"] = slice_meta(r.meta, i);
      if (r.map.defined())
        res["map"] = {{"h", r.grid.image ? r.grid.height : 1},
                      {"w", r.grid.image ? r.grid.width : r.map.size(1)},
                      {"f32", base64_floats(r.map[i])}};
      else
        res["map_error"] = r.map_error;
      if (r.tokens.is_array() && i < static_cast<int64_t>(r.tokens.size())) res["tokens"] = r.tokens[static_cast<size_t>(i)];
      const auto per_sample = [&](const json& figure) {
        if (!figure.is_object() || figure.contains("error")) return figure;
        json out = figure;
        for (auto& [k, v] : out.items())
          if (v.is_array() && static_cast<int64_t>(v.size()) == kept && k != "layers") v = v[static_cast<size_t>(i)];
        return out;
      };
      res["curves"] = per_sample(curves[mi]);
      if (job.randomisation) res["randomisation"] = per_sample(randomisation[mi]);
      results.push_back(res);
    }
    s["results"] = results;
    s["agreement"] = agreement[static_cast<size_t>(i)];
    s["caveats"] = report_caveats(results, s["agreement"]);
    samples.push_back(s);
  }
  data["samples"] = samples;

  ReportResult out;
  out.data = data;
  if (job.format == "html") {
    out.artifacts.push_back({"report.html", "text/html", fill_report_template(page, data)});
    if (!job.out.empty()) {
      write_file_atomic(job.out, out.artifacts.front().bytes);
      out.files.push_back(job.out);
    }
    return out;
  }
  out.artifacts = markdown_artifacts(data, runs, input, kept);
  if (!job.out.empty()) out.files = write_artifacts(job.out, out.artifacts);
  return out;
}

}  // namespace candela
