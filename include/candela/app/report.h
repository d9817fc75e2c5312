// `candela report`: one file that shows an explanation and the figures that say whether to trust
// it, for one or more samples, with several methods side by side.
//
// For each method the report runs the same explain job as `candela explain` (app/jobs.h), then
// the trust figures with the library's own code: completeness and warnings from attribution.json,
// the model parameter randomisation check and the deletion/insertion curves through the metric
// registry (eval/metrics.h, the definitions `candela evaluate` scores), agreement between methods
// as Spearman's rank correlation (spearman_rows) and the IoU of their top 10% features
// (top_fraction_iou_rows), and the explanation in words (render/words.h, attribution.json's
// "summary").
//
// HTML: the web UI's own components (web/src/report.tsx, built by Vite into web/dist/report.html
// with its JavaScript and CSS inlined) render a JSON blob that the report puts into the page's
// <script type="application/json" id="candela-report">: one self-contained file that opens from
// file:// with no network and no server. Markdown: report.md with PNGs (the heatmaps of all
// methods side by side in one picture, so one colour scale) in a folder.
//
//   ReportJob job;
//   job.model = "digits_cnn.pt"; job.input = "digit_0.png";
//   job.methods = {"saliency", "integrated_gradients", "grad_cam"}; job.out = "report.html";
//   ReportResult r = run(job);  // r.files: {"report.html"}
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "candela/app/jobs.h"

namespace candela {

struct ReportJob {
  std::string model, input, out;
  std::vector<std::string> methods;
  std::string target = "top1";   // top1, an index, a class name, or one index per sample
  int64_t top_k = 5;             // classes shown in the prediction
  std::string format = "html";   // html (one file) or md (a folder: report.md and PNGs)
  std::string baseline;          // as explain's --baseline; empty: each method's default (zeros)
  std::string features;          // as explain's --features (perturbation methods)
  std::vector<std::string> layers;  // for the methods that take layers (CAMs, layer methods, text models)
  nlohmann::json method_options = nlohmann::json::object();  // {"METHOD": {"KEY": VALUE}}
  bool randomisation = true;     // run the model parameter randomisation check
  std::string randomisation_mode = "full";  // full: every layer at once (one re-explanation); cascading: one per layer
  int64_t curve_steps = 20;      // steps of the deletion/insertion curves (the web UI's trust panel's 20)
  int64_t max_samples = 8;       // rows of a many-row input shown (all are explained; the first ones are shown)
  std::string web;               // folder holding report.html (web/dist); empty: found as `candela serve` finds it
  std::string title;             // empty: "<model> — <input>"
  Budget budget;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx).");
    v("input", input, "An image, a .npy/.csv array [N, ...] (one section per row), or for a token model text or a .txt "
                      "of lines.");
    v("out", out, "Output: the .html file (format html) or a folder (format md); empty: return the files.");
    v("methods", methods, "Methods shown side by side (see `candela methods`).");
    v("target", target, "Class to explain: top1, an index, a class name, or one index per sample (1,4,2).");
    v("top_k", top_k, "Classes shown in the prediction.");
    v("format", format, "html (one self-contained file) or md (Markdown and PNGs in a folder).",
      std::vector<std::string>{"html", "md"});
    v("baseline", baseline, "Baseline of the methods that use one: zeros, constant:V, blur:SIGMA, ...; empty: zeros.");
    v("features", features, "Feature groups for perturbation methods: each, grid:CELL, slic:N, ...");
    v("layers", layers, "Layers, for the methods that take them (CAMs, layer methods, token models' embedding).");
    v("method_options", method_options, "Options per method: {\"METHOD\": {\"KEY\": VALUE}}.");
    v("randomisation", randomisation, "Run the model parameter randomisation check.");
    v("randomisation_mode", randomisation_mode,
      "full (every layer randomised at once: one more explanation per method) or cascading (the paper's curve: one "
      "more explanation per layer with parameters).",
      std::vector<std::string>{"full", "cascading"});
    v("curve_steps", curve_steps, "Steps of the deletion and insertion curves.");
    v("max_samples", max_samples, "Show the first N samples of a many-row input.");
    v("web", web, "Folder with the built web UI's report.html (default: found as `candela serve` finds web/dist).");
    v("title", title, "Title of the report (default: model and input).");
    budget.visit(v);
    spec.visit(v);
  }
};

struct ReportResult {
  nlohmann::json data;              // what the report shows (the HTML's embedded JSON)
  std::vector<Artifact> artifacts;  // report.html, or report.md and its PNGs
  std::vector<std::string> files;   // the paths written (empty when job.out is empty)
};

// Checks everything cheap first (methods, options, format, the web UI's template), then explains
// and measures; writes atomically (nothing on an error).
ReportResult run(const ReportJob& job, const RunControl& control = {});
// run()'s checks that need no model and no input.
void validate(const ReportJob& job);

// The built web UI's folder (web/dist or an installed share/candela/web), found next to the
// running executable; empty when there is none.
std::string find_web_dir();

// The HTML report's page with `data` embedded (the template's <script id="candela-report"> filled).
std::string fill_report_template(const std::string& page, const nlohmann::json& data);

}  // namespace candela
