// The app layer: what a front end asks for, as plain data, and one function that does it.
//
// The CLI, the HTTP server and the Python package all take a request, check it against the
// registries, load the model and the data, run, and hand back results and files. That
// orchestration lives here, once. Each job is a struct whose fields are listed by visit(), the
// same reflection as method options (core/options.h), so one definition gives JSON in and out
// (job_from_json / job_to_json), the server's request schema and Python's keyword arguments;
// the CLI binds its flags to the same fields. run(job, control) validates everything cheap
// before loading anything heavy, reports progress, stops at the next batch when cancelled,
// and writes its files atomically (or returns them as artifacts, for callers without a disk).
//
//   ExplainJob job;
//   job.model = "resnet18.pt"; job.input = "cat.png"; job.method = "grad_cam";
//   job.layers = {"layer4"}; job.out = "out/";
//   ExplainResult r = run(job);   // r.files: attributions.npy, attribution.json, heatmap.png, ...
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "candela/core/attribution.h"
#include "candela/core/batching.h"
#include "candela/core/options.h"
#include "candela/core/progress.h"
#include "candela/core/explainer.h"
#include "candela/io/input.h"
#include "candela/methods/concept/craft.h"
#include "candela/methods/concept/crp.h"
#include "candela/methods/concept/tcav.h"
#include "candela/methods/visualization/feature_visualization.h"
#include "candela/render/export.h"
#include "candela/render/heatmap.h"
#include "candela/robustness/counterfactual.h"
#include "candela/robustness/probe.h"
#include "candela/robustness/refine.h"

namespace candela {

class Model;
struct InputSpec;
struct EvaluateProgress;

// How a caller follows and stops a job. Every member may be left empty.
struct RunControl {
  ProgressCallback progress;  // explain, audit: per batch of model evaluations
  std::function<void(const EvaluateProgress&)> evaluate_progress;  // evaluate: per unit of work, with time left
  std::function<void(const RefineEpoch&)> refine_epoch;  // refine: after every training epoch
  CancelToken cancel;         // checked between batches; the job then throws Cancelled and writes nothing
  std::function<void(const std::string&)> note;  // what the user should know before the result (an inferred layout)
};

// Overrides of the model's input spec (its .json sidecar), as text: "3,224,224", "0.485,0.456,0.406".
struct SpecOverrides {
  std::string input_shape, layout, mean, std, range;
  template <class V> void visit(V& v) {
    v("input_shape", input_shape, "Per-sample input shape, e.g. 3,224,224 (overrides the model's .json).");
    v("layout", layout, "Input layout: NCHW, NHWC, NC (tabular), NL (tokens).");
    v("mean", mean, "Per-channel mean for image normalisation, e.g. 0.485,0.456,0.406.");
    v("std", std, "Per-channel std for image normalisation, e.g. 0.229,0.224,0.225.");
    v("range", range, "Pixel value range before normalisation, e.g. 0,1 or 0,255.");
  }
  void apply(Model& model) const;  // throws InvalidArgument naming the flag on malformed text
};

// How much a job may use per model call; every job that runs the model has one.
struct Budget {
  double max_memory = EvalOptions{}.max_memory_mb;  // MB per batch (sets the batch size)
  int64_t batch_size = 0;                           // fixed rows per model call; 0 = automatic
  template <class V> void visit(V& v) {
    v("max_memory", max_memory, "Memory budget per batch in MB (sets the batch size).");
    v("batch_size", batch_size, "Fixed rows per model call (0: automatic).");
  }
};

// `candela explain`: one method on one input (an image, a .npy/.csv array of rows).
struct ExplainJob {
  std::string model, input, method, out;
  std::string target = "top1";       // top1, an index, a class name, one index per sample (1,4,2), logprob:...
  std::string baseline;              // empty: zeros (the method's default); see Baseline::parse
  std::string background;            // rows (.csv/.npy) whose distribution is the baseline
  std::string training_data;         // tabular: rows (.csv/.npy) the words place each value among
  std::string features;              // feature groups: each, grid:CELL, slic:N, felzenszwalb:S, FILE.npy
  std::string feature_names;         // a,b,c or FILE.txt
  std::string composite;             // LRP composite (name or JSON file)
  std::vector<std::string> layers;   // the method's layers (Grad-CAM, layer methods)
  nlohmann::json options = nlohmann::json::object();  // method options, typed as its schema says
  std::string device = "cpu";
  Budget budget;
  std::string sign = HeatmapOptions{}.sign, colormap = HeatmapOptions{}.colormap;
  double clip_percentile = HeatmapOptions{}.clip_percentile, alpha = HeatmapOptions{}.alpha;
  // Token models (layout NL): how an embedding-layer attribution [N, L, D] becomes one value per
  // token, and whether the tokenizer's pieces are merged into words.
  std::string token_reduction = "sum", aggregate = "token", word_reduction = "sum";
  // The explanation in words with the checks that cost model calls: the strongest other class
  // explained too (one more explanation; tables and token models) and the top class under tiny
  // noise (16 forward passes per sample). Off, the words use what the explanation computed.
  bool explain_in_words = false;
  // Language models (output [N, L, V]): explain log p(token_t | tokens < t) for every position
  // t = 1..L-1 with teacher forcing: attributions_steps.npy [N, L-1, L] and steps.json.
  bool per_step = false;
  // Models whose forward() takes more than the input (Captum's additional_forward_args).
  std::string mask = "auto";
  std::vector<std::string> forward_args;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "TorchScript (.pt) or ONNX (.onnx) model file; a sidecar .json may describe its input.");
    v("input", input, "An image (PNG, JPEG, ...), or a .npy/.csv array [N, ...]; for a token model (layout NL) also "
                      "text, or a .txt file with one text per line.");
    v("method", method, "Attribution method (see `candela methods`).");
    v("out", out, "Output folder; empty: return the files without writing them.");
    v("target", target, "Class to explain: top1, an index, a class name, or one index per sample (1,4,2); for a "
                        "language model logprob:POS[:TOKEN] or contrast:POS:TOKEN:FOIL (tokens by id or vocabulary).");
    v("baseline", baseline, "zeros, constant:V, blur:SIGMA, uniform:LO,HI, FILE.npy or dist:FILE.npy; empty: zeros.");
    v("background", background, "Background rows (.csv or .npy): the baseline distribution for SHAP, LIME, ...");
    v("training_data", training_data, "Tabular rows (.csv or .npy) from the training data: the explanation in words "
                                      "places each feature's value at its percentile among them (empty: the "
                                      "background rows, if any).");
    v("features", features, "Feature groups: each, grid:CELL, slic:REGION_SIZE, felzenszwalb:SCALE, or FILE.npy.");
    v("feature_names", feature_names, "Names of tabular features: a,b,c or FILE.txt.");
    v("composite", composite, "LRP composite: a name (see `candela methods`) or a JSON file.");
    v("layers", layers, "Layers to explain or tap, as `candela info` names them.");
    v("options", options, "Method options, e.g. {\"n_steps\": 32} (see `candela methods`).");
    v("device", device, "cpu, cuda, cuda:N.");
    budget.visit(v);
    v("sign", sign, "Heatmap sign: auto, signed, absolute, positive, negative.");
    v("colormap", colormap, "Heatmap colormap: bwr, coolwarm, inferno, viridis, jet, gray; empty: by sign.");
    v("clip_percentile", clip_percentile, "Clip the heatmap at this percentile of |value|.");
    v("alpha", alpha, "Overlay opacity in [0, 1].");
    v("token_reduction", token_reduction, "Token models: reduce an embedding attribution [N, L, D] to [N, L] by sum "
                                          "(signed, Captum's choice) or l2 (the norm, inseq's).");
    v("aggregate", aggregate, "Token models: report per token, or per word (the tokenizer's pieces merged: WordPiece ##, "
                              "BPE and SentencePiece by spaces).");
    v("word_reduction", word_reduction, "With aggregate=word: how pieces combine: sum, mean or max.");
    v("explain_in_words", explain_in_words, "Add the word checks that cost model calls: the strongest other class "
                                            "explained too (one more explanation) and the top class under 1% noise "
                                            "(16 forward passes per sample).");
    v("per_step", per_step, "Language models: one attribution per generated position t (log p(token_t | tokens < t), "
                            "teacher forcing) over the input: attributions_steps.npy [N, L-1, L] and steps.json.");
    v("mask", mask, "The attention mask forward() gets, for a model that takes one (a parameter attention_mask, or "
                    "one named like a mask): FILE.npy ([N, L], or [1, L] for all), auto (0 at the tokenizer's "
                    "padding, 1 elsewhere, when the model's sidecar names a tokenizer; else forward()'s default) or "
                    "none (forward()'s default).");
    v("forward_args", forward_args, "Other parameters of forward() after the input, NAME=FILE.npy each (e.g. "
                                    "token_type_ids=types.npy): one row per sample, or one row for all.");
    spec.visit(v);
  }
};

struct ExplainResult {
  Attribution attribution;
  std::vector<Artifact> artifacts;  // attributions.npy, attribution.json, heatmaps
  std::vector<std::string> files;   // the paths written (empty when job.out is empty)
};
ExplainResult run(const ExplainJob& job, const RunControl& control = {});
// What run(ExplainJob) explained with, for a caller that goes on with it (`candela report`'s
// trust checks re-explain and perturb the same input with the same explainer and request).
struct ExplainContext {
  std::shared_ptr<Model> model;
  LoadedInput input;
  std::shared_ptr<Explainer> explainer;
  ExplainRequest request;
};
ExplainResult run(const ExplainJob& job, const RunControl& control, ExplainContext* context);
// run()'s checks that need no model and no input (method, options, layers, baseline, heatmap
// options): a server refuses a bad request with them before queueing it. Throws as run() does.
void validate(const ExplainJob& job);

// `candela evaluate`: methods scored by metrics over a data set, resumable from its journal.
struct EvaluateJob {
  std::string model, data, labels, masks, out;
  std::vector<std::string> methods, metrics;
  nlohmann::json method_options = nlohmann::json::object();  // {"grad_cam": {"layers": ["conv3"]}}
  nlohmann::json metric_options = nlohmann::json::object();  // {"road": {"noise": 0.05}}
  std::string baseline = "zeros";
  int64_t chunk = 8, bootstrap = 1000, seed = 0, max_samples = 0;
  std::string mask = "auto";              // as ExplainJob's
  std::vector<std::string> forward_args;  // as ExplainJob's
  Budget budget;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx).");
    v("data", data, "Samples: a .npy/.csv array [N, ...], or a folder of images.");
    v("labels", labels, ".npy of class indices to explain (default: the model's top-1).");
    v("masks", masks, ".npy of ground-truth masks [N, H, W] (nonzero = relevant).");
    v("out", out, "Output folder (resumed if it holds a run with the same settings).");
    v("methods", methods, "Methods to score (see `candela methods`).");
    v("metrics", metrics, "Metrics (see `candela metrics`).");
    v("method_options", method_options, "Options per method: {\"METHOD\": {\"KEY\": VALUE}}.");
    v("metric_options", metric_options, "Options per metric: {\"METRIC\": {\"KEY\": VALUE}}.");
    v("baseline", baseline, "Baseline for methods and metrics that use one.");
    v("chunk", chunk, "Samples per unit of work and journal entry.");
    v("bootstrap", bootstrap, "Bootstrap resamples for the 95% intervals.");
    v("seed", seed, "Seed of the bootstrap.");
    v("max_samples", max_samples, "Use only the first N samples (0: all).");
    v("mask", mask, "As explain's: the attention mask forward() gets (FILE.npy, auto or none); with a row per "
                    "sample, each sample is a chunk of its own.");
    v("forward_args", forward_args, "As explain's: other parameters of forward() after the input, NAME=FILE.npy.");
    budget.visit(v);
    spec.visit(v);
  }
};
// Returns results.json's content; writes results.csv, results.json and summary.md into job.out.
nlohmann::json run(const EvaluateJob& job, const RunControl& control = {});
// run()'s checks that need no model and no data.
void validate(const EvaluateJob& job);

// `candela audit`: looks for a shortcut, a small region most explanations rely on.
struct AuditJob {
  std::string model, data, labels, out;
  std::string method = "integrated_gradients";
  nlohmann::json options = nlohmann::json::object();
  std::string baseline = "zeros";
  double window = 0.125, factor = 5.0, min_fraction = 0.3;
  int64_t clusters = 3, seed = 0, max_samples = 0;
  Budget budget;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx).");
    v("data", data, "Samples: a .npy array [N, ...] or a folder of images.");
    v("labels", labels, ".npy of classes to explain (default: the model's top-1).");
    v("out", out, "Output folder for audit.json; empty: do not write it.");
    v("method", method, "Attribution method.");
    v("options", options, "Method options.");
    v("baseline", baseline, "Baseline for the method.");
    v("window", window, "Window side as a fraction of the image side.");
    v("factor", factor, "Relevance share over area share that counts as concentrated.");
    v("min_fraction", min_fraction, "Share of samples that makes it a suspected shortcut.");
    v("clusters", clusters, "k of the k-means over the explanations.");
    v("seed", seed, "Seed of the clustering.");
    v("max_samples", max_samples, "Use only the first N samples (0: all).");
    budget.visit(v);
    spec.visit(v);
  }
};
// Returns audit.json's content (and writes it into job.out when given).
nlohmann::json run(const AuditJob& job, const RunControl& control = {});

// `candela recommend`: a short evaluation of the methods that apply to the model's input kind on
// the user's own data (eval/recommend.h): the method to use for localisation (with ground-truth
// masks), faithfulness, stability and cost, each with its evidence, and the methods that fail the
// randomisation check ("avoid"). `data` is an array file or a folder holding x_test.npy; masks are
// taken from `masks`, else found beside the data (masks_beside).
struct RecommendJob {
  std::string model, data, labels, masks, out;
  std::vector<std::string> methods;  // empty: the default set for the input kind
  nlohmann::json method_options = nlohmann::json::object();  // {"grad_cam": {"layers": ["conv3"]}}
  std::string baseline = "zeros";
  int64_t samples = 16, bootstrap = 1000, seed = 0;
  double randomisation_threshold = 0.8;
  Budget budget;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "TorchScript model file (.pt); an ONNX model runs without the randomisation check.");
    v("data", data, "Samples: a .npy/.csv array [N, ...], a folder of images, or a folder holding x_test.npy.");
    v("labels", labels, ".npy of class indices to explain (default: the model's top-1).");
    v("masks", masks, ".npy of ground-truth masks (default: found beside the data, see docs/guide.md).");
    v("out", out, "Output folder for recommend.json, recommend.md and results.csv; empty: do not write.");
    v("methods", methods, "Methods to compare (default: those that apply to the input kind and are cheap).");
    v("method_options", method_options, "Options per method: {\"METHOD\": {\"KEY\": VALUE}}.");
    v("baseline", baseline, "Baseline for methods and metrics that use one.");
    v("samples", samples, "Samples evaluated (the first N).");
    v("bootstrap", bootstrap, "Bootstrap resamples for the 95% intervals.");
    v("seed", seed, "Seed of the bootstrap.");
    v("randomisation_threshold", randomisation_threshold,
      "A method fails the randomisation check when its similarity to the randomised model's map is above this "
      "over its whole 95% interval.");
    budget.visit(v);
    spec.visit(v);
  }
};
struct RecommendResult {
  nlohmann::json report;            // recommend.json
  std::vector<Artifact> artifacts;  // recommend.json, recommend.md, results.csv
  std::vector<std::string> files;
};
RecommendResult run(const RecommendJob& job, const RunControl& control = {});
// The ground-truth masks beside a data file, by name: for DIR/x_NAME.npy DIR/masks_NAME.npy; for
// DIR/NAME.npy DIR/NAME_masks.npy; for DIR/NAME_ids.npy or DIR/NAME_x.npy also DIR/NAME_masks.npy.
// "" when none exists.
std::string masks_beside(const std::string& data);

// `candela refine`: retrains a classifier away from an image region an audit flagged
// (candela/robustness/refine.h), then measures it again: accuracy on the test splits and the
// audit, before and after. `data` is a folder holding x_train.npy and y_train.npy (the
// ground-truth shortcut set's layout; its x_test.npy, y_test.npy, x_test_clean.npy,
// watermark_train.npy and watermark_test.npy are used when present) or a .npy of training images
// with `labels`. The other files may be given one by one and override the folder's.
struct RefineJob {
  std::string model, data, labels, region, out;
  std::string test, test_labels, test_clean, marked, test_marked;
  RefineOptions options;
  std::string audit_method = "integrated_gradients";
  int64_t audit_samples = 200;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "TorchScript model file (.pt) of an image classifier.");
    v("data", data, "Training images: a folder with x_train.npy and y_train.npy, or a .npy [N, C, H, W] with --labels.");
    v("labels", labels, "Training labels: .npy of class indices [N].");
    v("region", region, "The region to unlearn: y0,x0,y1,x1 (end-exclusive) or an audit.json (its window).");
    v("out", out, "Output folder: model.pt, model.json, refine.json; empty: return them without writing.");
    v("test", test, "Test images .npy (default: the folder's x_test.npy).");
    v("test_labels", test_labels, "Test labels .npy (default: the folder's y_test.npy).");
    v("test_clean", test_clean, "The test images without the artefact .npy, same labels (default: x_test_clean.npy).");
    v("marked", marked, "Training images that carry the artefact: bool .npy [N] (default: watermark_train.npy).");
    v("test_marked", test_marked, "Test images that carry it: bool .npy (default: watermark_test.npy).");
    options.visit(v);
    v("audit_method", audit_method, "Attribution method of the audits before and after.");
    v("audit_samples", audit_samples, "Test images the audits explain (0: all).");
    spec.visit(v);
  }
};
struct RefineResult {
  nlohmann::json report;            // refine.json
  std::vector<Artifact> artifacts;  // model.pt, model.json, refine.json
  std::vector<std::string> files;
};
RefineResult run(const RefineJob& job, const RunControl& control = {});

// `candela robustness`: an adversarial probe of a data set (candela/robustness/probe.h).
struct RobustnessJob {
  std::string model, data, labels, out;
  RobustnessOptions options;
  int64_t max_samples = 0;
  Budget budget;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx).");
    v("data", data, "Samples: a .npy/.csv array [N, ...] in the model's input space, or a folder of images.");
    v("labels", labels, ".npy of true classes (default: the model's top-1).");
    v("out", out, "Output folder; empty: return the files without writing them.");
    options.visit(v);
    v("max_samples", max_samples, "Use only the first N samples (0: all).");
    budget.visit(v);
    spec.visit(v);
  }
};
struct RobustnessJobResult {
  RobustnessResult result;
  std::vector<Artifact> artifacts;  // adversarial.npy, perturbation.npy, robustness.json, heatmaps
  std::vector<std::string> files;
};
RobustnessJobResult run(const RobustnessJob& job, const RunControl& control = {});

// `candela counterfactual`: counterfactual rows for tabular inputs (candela/robustness/counterfactual.h).
struct CounterfactualJob {
  std::string model, input, background, out;
  std::string target = "opposite";  // a class index or name; "opposite": the other class of a binary model
  std::string constraints;           // a JSON file of feature constraints
  CounterfactualOptions options;
  Budget budget;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx) of a tabular classifier.");
    v("input", input, "Rows to explain: .csv (a header names the features) or .npy [N, F].");
    v("background", background, "Training rows (.csv or .npy): feature ranges and MADs.");
    v("out", out, "Output folder; empty: return the files without writing them.");
    v("target", target, "Class the counterfactuals should reach: an index, a class name, or opposite (binary).");
    v("constraints", constraints, "JSON file of feature constraints (immutable, ranges, integer, categorical, monotone).");
    options.visit(v);
    budget.visit(v);
    spec.visit(v);
  }
};
struct CounterfactualJobResult {
  CounterfactualResult result;
  std::vector<Artifact> artifacts;  // counterfactuals.csv, counterfactuals.json
  std::vector<std::string> files;
};
CounterfactualJobResult run(const CounterfactualJob& job, const RunControl& control = {});

// `candela visualize`: feature visualisation (methods/visualization/feature_visualization.h).
// Each --channel C of --layer gives channel_C.png; --objective TEXT gives objective.png; --atlas
// gives atlas.png, one image per channel of the layer. visualization.json holds every curve.
// With --param maco each image has its transparency beside it (NAME_alpha.png); --data adds the
// dataset examples of each --channel (channel_C_examples.png) and of the atlas's channels
// (atlas_examples.png, one row per channel).
struct VisualizeJob {
  std::string model, layer, objective, out;
  std::vector<int64_t> channels;
  bool atlas = false;
  int64_t atlas_channels = 0;  // the first N channels of the layer; 0: all
  int64_t atlas_batch = 8;     // channels optimised together in the atlas, one image each
  std::string data;            // dataset examples: a folder of images or a .npy
  int64_t top_k = 9;           // dataset examples per channel
  std::string maco_spectrum;   // maco: images (a folder or a .npy) whose mean |FFT| is the magnitude
  FeatureVisualizationOptions options;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx) taking images.");
    v("layer", layer, "Layer whose channels to visualise, as `candela info` names it.");
    v("channels", channels, "Channels of the layer to visualise, one image file each (channel_C.png).");
    v("objective", objective, "An objective, e.g. channel(layer4,12) - 0.5*channel(layer4,3) (objective.png).");
    v("out", out, "Output folder; empty: return the files without writing them.");
    v("atlas", atlas, "A channel atlas of the layer: every channel's image in one grid (atlas.png).");
    v("atlas_channels", atlas_channels, "Atlas of the first N channels only (0: all).");
    v("atlas_batch", atlas_batch, "Atlas channels optimised together, one image each.");
    v("data", data,
      "Dataset examples: the top-k samples of this folder/.npy for each --channel and atlas channel, with crops.");
    v("top_k", top_k, "Dataset examples per channel.");
    v("maco_spectrum", maco_spectrum,
      "maco: a folder of images or a .npy whose mean Fourier magnitude is the fixed magnitude (Xplique's "
      "maco_dataset); empty: the 1/f^decay_power spectrum.");
    options.visit(v);
    spec.visit(v);
  }
};
struct VisualizeResult {
  nlohmann::json report;            // visualization.json
  std::vector<Artifact> artifacts;  // PNGs and visualization.json
  std::vector<std::string> files;
};
VisualizeResult run(const VisualizeJob& job, const RunControl& control = {});

// `candela tcav`: concept sensitivity of a class at a layer (methods/concept/tcav.h).
struct TcavJob {
  std::string model, layer, input, out;
  std::string target;                  // a class index or name
  std::vector<std::string> concepts;   // NAME=PATH (a folder of images or a .npy)
  std::vector<std::string> randoms;    // PATH, one per random set
  std::string cache;                   // activation/CAV cache folder; empty: the default; "none": off
  int64_t max_samples = 0;             // per set (0: all)
  TcavOptions options;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx).");
    v("layer", layer, "Layer whose activations the CAVs live in, as `candela info` names it.");
    v("input", input, "Inputs of the target class: a folder of images or a .npy [N, ...].");
    v("target", target, "The class whose sensitivity is tested: an index or a class name.");
    v("concepts", concepts, "Concepts as NAME=PATH, PATH a folder of images or a .npy of inputs.");
    v("randoms", randoms, "Random example sets (folders or .npy files), at least 3.");
    v("out", out, "Output folder for tcav.json; empty: do not write it.");
    v("cache", cache, "Cache folder for activations and CAVs (default: the user cache; none: off).");
    v("max_samples", max_samples, "Use only the first N samples of each set (0: all).");
    options.visit(v);
    spec.visit(v);
  }
};
// Returns tcav.json's content (and writes it into job.out when given).
nlohmann::json run(const TcavJob& job, const RunControl& control = {});

// `candela craft`: concepts discovered in the images of one class (methods/concept/craft.h).
struct CraftJob {
  std::string model, layer, input, out;
  std::string target;      // a class index or name
  int64_t top_patches = 10;  // patches shown per concept
  CraftOptions options;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx) taking NCHW images.");
    v("layer", layer, "Layer after a ReLU where concepts are factorised, as `candela info` names it.");
    v("input", input, "Images of the class: a folder of images or a .npy [N, C, H, W].");
    v("target", target, "The class: an index or a class name.");
    v("out", out, "Output folder for craft.json and concept_K.png; empty: return the files without writing them.");
    v("top_patches", top_patches, "Patches shown per concept (those with the largest coefficient).");
    options.visit(v);
    spec.visit(v);
  }
};
struct CraftJobResult {
  nlohmann::json report;            // craft.json
  std::vector<Artifact> artifacts;  // craft.json, concept_K.png
  std::vector<std::string> files;
};
CraftJobResult run(const CraftJob& job, const RunControl& control = {});

// `candela crp`: concept relevance propagation at one layer (methods/concept/crp.h).
struct CrpJob {
  std::string model, layer, input, out;
  std::string target = "top1";     // top1, a class index or a class name
  std::vector<int64_t> channels;   // conditional heatmaps for these; empty: the most relevant top_channels
  int64_t top_channels = 6;
  std::string data;                // reference samples: a folder of images or a .npy
  int64_t top_k = 8;               // reference samples per channel
  LrpOptions lrp;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "TorchScript model file (.pt).");
    v("layer", layer, "Layer whose channels condition the heatmaps, as `candela info` names it.");
    v("input", input, "An image or a .npy [N, ...] to explain.");
    v("out", out, "Output folder; empty: do not write.");
    v("target", target, "Class: top1, an index or a class name.");
    v("channels", channels, "Channels of the layer to draw conditional heatmaps for (default: the most relevant).");
    v("top_channels", top_channels, "Without --channel: heatmaps of this many most relevant channels per sample.");
    v("data", data, "Reference samples: the --top-k samples of this folder/.npy where each channel is most relevant.");
    v("top_k", top_k, "Reference samples per channel.");
    lrp.visit(v);
    spec.visit(v);
  }
};
// Returns crp.json's content; writes crp.json and channel_C[_i].png heatmaps into job.out.
nlohmann::json run(const CrpJob& job, const RunControl& control = {});

// `candela info`: a model's input, output and layers.
struct InfoJob {
  std::string model;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx).");
    spec.visit(v);
  }
};
// {"model", "input", "output_kind", "classes", "output_shape", "layers": [{name, type, output_shape, calls}]}.
nlohmann::json run(const InfoJob& job, const RunControl& control = {});

// The model's top-k classes for each input row (a server's quick look before explaining).
struct PredictJob {
  std::string model, input;
  int64_t top_k = 5;
  SpecOverrides spec;
  template <class V> void visit(V& v) {
    v("model", model, "Model file (.pt or .onnx).");
    v("input", input, "An image, or a .npy/.csv array [N, ...].");
    v("top_k", top_k, "How many classes to return per row, best first.");
    spec.visit(v);
  }
};
// {"output_kind", "classes", "samples": [{"top": [{"class", "score", "name"?}]}]}; scores are
// softmax probabilities for logits, the outputs as they are otherwise. Token models (layout NL)
// take text, a .txt of lines or ids as explain does.
nlohmann::json run(const PredictJob& job, const RunControl& control = {});
// The same answer for a model and a batch the caller has already loaded.
nlohmann::json predict_top_k(const Model& model, const at::Tensor& batch, int64_t top_k);

// A job from JSON: the fields visit() lists, types checked, unknown keys refused with a
// suggestion; `what` names the request in errors ("the explain request"). And back.
template <class Job>
Job job_from_json(const nlohmann::json& j, const std::string& what) {
  CANDELA_CHECK(j.is_object(), what, " must be a JSON object, got ", j.dump(), ".");
  Job job;
  detail::FromJson reader{j, {}};
  job.visit(reader);
  detail::check_known_keys(j, reader.known, "field", "in " + what);
  return job;
}
template <class Job>
nlohmann::json job_to_json(Job job) {
  return options_to_json(job);
}
// Every field with its type, default and description (for the server's API and Python's docs).
template <class Job>
nlohmann::json job_schema() {
  Job job;
  detail::Schema schema;
  job.visit(schema);
  return schema.out;
}

// The one KEY=VALUE parser: `--option n_steps=32` (or `--method-option ig.n_steps=32` with
// `named`) typed by the schema of the method or metric it names. `flag` names the flag in errors.
nlohmann::json key_value_options(const std::vector<std::string>& pairs, const nlohmann::json& schema,
                                 const std::string& name, const std::string& flag);
// "NAME.KEY=VALUE" pairs into {"NAME": {"KEY": VALUE}}; metrics = true types them by the metric registry.
nlohmann::json named_key_value_options(const std::vector<std::string>& pairs, bool metrics);

}  // namespace candela
