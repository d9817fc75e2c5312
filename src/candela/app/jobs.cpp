#include "candela/app/jobs.h"

#include <ATen/ATen.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>

#include <filesystem>
#include <iomanip>
#include <map>
#include <sstream>


#include "candela/core/baseline.h"
#include "candela/core/error.h"
#include "candela/core/explainer.h"
#include "candela/core/model.h"
#include "candela/core/registry.h"
#include "candela/core/target.h"
#include "candela/detail/tensor_util.h"
#include "candela/detail/text.h"
#include "candela/eval/evaluate.h"
#include "candela/eval/metrics.h"
#include "candela/eval/recommend.h"
#include "candela/io/dataset.h"
#include "candela/io/file.h"
#include "candela/io/input.h"
#include "candela/methods/attention/attention_graph.h"
#include "candela/io/npy.h"
#include "candela/methods/perturbation/feature_mask.h"
#include "candela/robustness/counterfactual.h"
#include "candela/robustness/probe.h"
#include "candela/text/tokens.h"
#include "candela/render/words.h"

namespace candela {
namespace {

using detail::str_cat;

// "1,2,3" -> {1, 2, 3}, as integers or numbers; `what` names the flag in errors.
template <class T>
std::vector<T> parse_list(const std::string& text, const char* what) {
  std::vector<T> out;
  for (const auto& item : detail::split(text, ',')) {
    long long i = 0;
    double d = 0;
    const bool ok = std::is_integral_v<T> ? detail::parse_int64(item, i) : detail::parse_double(item, d);
    CANDELA_CHECK(ok, what, " must be comma-separated ", std::is_integral_v<T> ? "integers" : "numbers", ", got '",
                  text, "'.");
    out.push_back(std::is_integral_v<T> ? static_cast<T>(i) : static_cast<T>(d));
  }
  return out;
}

// "a,b,c" or a text file with one name per line.
std::vector<std::string> read_names(const std::string& text) {
  std::vector<std::string> names;
  if (text.size() > 4 && text.substr(text.size() - 4) == ".txt") {
    for (auto& line : detail::split(read_file(text, 64 << 20), '\n'))
      if (!line.empty()) names.push_back(std::move(line));
  } else if (!text.empty()) {
    names = detail::split(text, ',');
  }
  CANDELA_CHECK(!names.empty(), "--feature-names is empty; give a,b,c or a .txt file with one name per line.");
  return names;
}

// The registered methods for which `pred` holds, comma-separated (for "methods that do: ..." hints).
template <class Pred>
std::string methods_where(Pred pred) {
  std::string names;
  for (const auto& m : Registry::builtin().methods())
    if (pred(m)) names += (names.empty() ? "" : ", ") + m.name;
  return names;
}

EvalOptions eval_options(const Budget& budget, const RunControl& control) {
  EvalOptions eval;
  eval.max_memory_mb = budget.max_memory;
  eval.max_batch_size = budget.batch_size;
  eval.cancel = control.cancel;
  eval.progress = control.progress;
  return eval;
}

// A 4-D array with no layout in the spec: infer it from the data's shape, and say so.
void infer_layout_from(Model& model, const at::Tensor& batch, const RunControl& control) {
  InputSpec s = model.input_spec();
  const std::string note = infer_layout(s, batch);
  if (note.empty()) return;
  model.set_input_spec(s);
  if (control.note) control.note(note);
}

Model load_model(const std::string& path, const SpecOverrides& spec) {
  Model model = Model::load(path);
  spec.apply(model);
  return model;
}

// --forward-arg NAME=FILE.npy: the name and the file.
std::pair<std::string, std::string> split_forward_arg(const std::string& arg) {
  const auto eq = arg.find('=');
  CANDELA_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < arg.size(), "--forward-arg takes NAME=FILE.npy (e.g. "
                "token_type_ids=types.npy), got '", arg, "'.");
  return {arg.substr(0, eq), arg.substr(eq + 1)};
}

void validate_forward_args(const std::string& mask, const std::vector<std::string>& args) {
  CANDELA_CHECK(mask.empty() || mask == "auto" || mask == "none" ||
                (mask.size() > 4 && mask.compare(mask.size() - 4, 4, ".npy") == 0), "--mask takes FILE.npy, auto or none, got '", mask, "'.");
  for (const auto& a : args) split_forward_arg(a);
}

// --mask and --forward-arg: the values the model's forward() gets after the input (Captum's
// additional_forward_args), and what each was, for attribution.json's "forward_args".
Model bind_forward_args(const Model& model, const std::string& mask, const std::vector<std::string>& args,
                        const at::Tensor& ids, nlohmann::json& described) {
  std::vector<std::pair<std::string, at::Tensor>> given;
  for (const auto& a : args) {
    auto [name, file] = split_forward_arg(a);
    given.emplace_back(name, read_npy(file));
    described[name] = file;
  }
  // The mask parameter: attention_mask, else the first named like a mask.
  std::string param;
  std::vector<std::string> names;
  for (const auto& p : model.forward_parameters()) {
    names.push_back(p.name);
    if (p.name == "attention_mask") param = p.name;
  }
  for (std::string n : names) {
    const std::string name = n;
    std::transform(n.begin(), n.end(), n.begin(), ::tolower);
    if (param.empty() && n.find("mask") != std::string::npos) param = name;
  }
  const bool given_already = described.contains(param);
  if (mask != "none" && !given_already) {
    if (mask.empty() || mask == "auto") {
      const at::Tensor m = param.empty() || model.input_spec().layout != "NL" ? at::Tensor() : padding_mask(model, ids);
      if (m.defined()) {
        given.emplace_back(param, m);
        described[param] = "auto: 0 at the tokenizer's padding, 1 elsewhere";
      }
    } else {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      CANDELA_CHECK(!param.empty(), "--mask gives forward() an attention mask, but this model's forward() takes no "
                    "parameter named like one (", names.empty() ? std::string("it takes only its input") : "it takes " + list,
                    "). Give other parameters with --forward-arg NAME=FILE.npy.");
      given.emplace_back(param, read_npy(mask));
      described[param] = mask;
    }
  }
  return model.with_forward_args(std::move(given));
}

}  // namespace

void SpecOverrides::apply(Model& model) const {
  InputSpec s = model.input_spec();
  if (!input_shape.empty()) s.shape = parse_list<int64_t>(input_shape, "--input-shape");
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

nlohmann::json key_value_options(const std::vector<std::string>& pairs, const nlohmann::json& schema,
                                 const std::string& name, const std::string& flag) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& kv : pairs) {
    const auto eq = kv.find('=');
    CANDELA_CHECK(eq != std::string::npos && eq > 0, flag, " takes KEY=VALUE, got '", kv, "'.");
    const std::string key = kv.substr(0, eq);
    CANDELA_CHECK(!out.contains(key), flag, " ", key, " is given twice; keep one.");
    out[key] = parse_option_value(schema, name, key, kv.substr(eq + 1));
  }
  return out;
}

nlohmann::json named_key_value_options(const std::vector<std::string>& pairs, bool metrics) {
  const char* flag = metrics ? "--metric-option" : "--method-option";
  nlohmann::json out = nlohmann::json::object();
  for (const auto& kv : pairs) {
    const auto dot = kv.find('.'), eq = kv.find('=');
    CANDELA_CHECK(dot != std::string::npos && eq != std::string::npos && dot < eq, flag,
                  " takes NAME.KEY=VALUE (e.g. ", metrics ? "road.noise=0.05" : "integrated_gradients.n_steps=32",
                  "), got '", kv, "'.");
    const std::string name = kv.substr(0, dot), key = kv.substr(dot + 1, eq - dot - 1);
    const nlohmann::json& schema =
        metrics ? MetricRegistry::builtin().get(name).schema : Registry::builtin().get(name).schema;
    out[name][key] = parse_option_value(schema, name, key, kv.substr(eq + 1));
  }
  return out;
}

// ---- explain -------------------------------------------------------------------------------

namespace {

// What an explain job needs before the model loads, checked: the explainer with its options,
// the heatmap's options and the baseline. Cheap: loads no model and no input (a .npy baseline
// or background file is read).
struct PreparedExplain {
  std::unique_ptr<Explainer> explainer;
  HeatmapOptions heatmap;
  Baseline baseline;
};

PreparedExplain prepare(const ExplainJob& job) {
  const std::string& method = job.method;
  const MethodInfo& info = Registry::builtin().get(method);
  CANDELA_CHECK(job.options.is_object(), "the options of ", method, " must be a JSON object, got ", job.options.dump(),
                ".");
  nlohmann::json options = job.options;
  if (!job.layers.empty()) {
    CANDELA_CHECK(info.schema.contains("layers"), method, " takes no layer; drop --layer (methods that do: ",
                  methods_where([](const MethodInfo& m) { return m.schema.contains("layers"); }), ").");
    CANDELA_CHECK(!options.contains("layers"), "give the layers either with --layer or with --option layers=..., not both.");
    options["layers"] = job.layers;
  }
  if (!job.composite.empty()) {
    CANDELA_CHECK(info.schema.contains("composite"), method, " takes no composite; --composite is for lrp.");
    CANDELA_CHECK(!options.contains("composite"),
                  "give the composite either with --composite or with --option composite=..., not both.");
    options["composite"] = job.composite;
  }
  auto explainer = info.create(options);
  const bool baseline_given = !job.baseline.empty();
  CANDELA_CHECK(!baseline_given || explainer->uses_baseline(), method,
                " does not use a baseline; drop --baseline (methods that use one: ",
                methods_where([](const MethodInfo& m) { return m.uses_baseline; }), ", and noise_tunnel around them).");
  HeatmapOptions heatmap;
  heatmap.sign = job.sign;
  heatmap.colormap = job.colormap;
  heatmap.clip_percentile = job.clip_percentile;
  heatmap.alpha = job.alpha;
  heatmap.validate();
  validate_token_options(job.token_reduction, job.aggregate, job.word_reduction);
  validate_forward_args(job.mask, job.forward_args);
  CANDELA_CHECK(job.background.empty() || !baseline_given,
                "give either --baseline or --background (a data set: the baseline distribution), not both.");
  CANDELA_CHECK(job.background.empty() || explainer->uses_baseline(), method,
                " does not use background data; drop --background.");
  Baseline baseline = !job.background.empty() ? Baseline::distribution(load_input(job.background, InputSpec{}).batch)
                                              : Baseline::parse(baseline_given ? job.baseline : "zeros");
  return {std::move(explainer), heatmap, std::move(baseline)};
}

}  // namespace

namespace {

// The attention methods also write the maps they read: attention_maps.npy [N, layers, heads, L, L]
// (every sample), and PNGs for the first kMaxMapSamples samples: each layer's heads averaged
// (attention_<s>_layer<l>.png), each head (attention_<s>_layer<l>_head<h>.png) and, for
// attention_rollout, the whole rollout matrix with the method's head fusion and discard ratio
// (attention_rollout_<s>.png). Rows are queries, columns keys; probabilities in [0, 1], unclipped.
constexpr int64_t kMaxMapSamples = 8;

std::vector<Artifact> attention_map_artifacts(Attribution& a, const Model& model, const at::Tensor& inputs,
                                              const HeatmapOptions& heatmap) {
  std::vector<std::string> layers;
  if (a.extra.contains("attention_layers")) layers = a.extra["attention_layers"].get<std::vector<std::string>>();
  const at::Tensor maps = detail::read_attention_maps(model, layers, inputs).to(at::kFloat).cpu();
  std::vector<Artifact> out{render_npy("attention_maps.npy", maps)};
  HeatmapOptions o = heatmap;
  o.sign = "positive";
  o.clip_percentile = 100.0;
  if (o.colormap.empty()) o.colormap = "inferno";
  const int64_t n = std::min(maps.size(0), kMaxMapSamples), k = maps.size(1), h = maps.size(2);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t l = 0; l < k; ++l) {
      const std::string stem = "attention_" + std::to_string(s) + "_layer" + std::to_string(l);
      out.push_back(render_png_raw(stem + ".png", maps[s][l].mean(0), o));
      for (int64_t head = 0; head < h; ++head)
        out.push_back(render_png_raw(stem + "_head" + std::to_string(head) + ".png", maps[s][l][head], o));
    }
  if (a.method == "attention_rollout") {
    std::vector<at::Tensor> per_layer;
    for (int64_t l = 0; l < k; ++l) per_layer.push_back(maps.select(1, l).to(at::kDouble));
    const at::Tensor rollout = detail::attention_rollout(per_layer, a.options.value("head_fusion", "mean"),
                                                         a.options.value("discard_ratio", 0.0));
    for (int64_t s = 0; s < n; ++s)
      out.push_back(render_png_raw("attention_rollout_" + std::to_string(s) + ".png", rollout[s].to(at::kFloat), o));
  }
  a.extra["attention_maps"] = {{"file", "attention_maps.npy"},
                               {"shape", maps.sizes().vec()},
                               {"png_samples", n},
                               {"layout", "[N, layers, heads, L (queries), L (keys)]"}};
  return out;
}

// Image segments (superpixels, grid cells, a mask file's ids), for the explanation in words: per
// sample, the segment holding the largest share of the positive attribution, its area and where
// its centre lies (3x3 parts). `values` and `mask` are [N, C, H, W] (NHWC permuted by the caller).
nlohmann::json segment_summary(const at::Tensor& values, const at::Tensor& mask, const std::string& spec) {
  nlohmann::json samples = nlohmann::json::array();
  for (int64_t i = 0; i < values.size(0); ++i) {
    const at::Tensor p = values[i].to(at::kDouble).sum(0).clamp_min(0).flatten();
    const at::Tensor ids = mask[i][0].flatten();
    const double total = p.sum().item<double>();
    if (total <= 0) {
      samples.push_back(nullptr);
      continue;
    }
    const auto [unique, inverse] = at::_unique(ids, /*sorted=*/true, /*return_inverse=*/true);
    const at::Tensor sums = at::zeros({unique.numel()}, p.options()).index_add_(0, inverse, p);
    const int64_t best = sums.argmax().item<int64_t>();
    const at::Tensor where = (inverse == best).nonzero().select(1, 0);
    const int64_t h = values.size(2), w = values.size(3);
    const double row = at::floor_divide(where, w).to(at::kDouble).mean().item<double>();
    const double col = at::remainder(where, w).to(at::kDouble).mean().item<double>();
    const int64_t r3 = std::min<int64_t>(2, static_cast<int64_t>(3 * row / h)), c3 = std::min<int64_t>(2, static_cast<int64_t>(3 * col / w));
    samples.push_back({{"id", unique[best].item<int64_t>()},
                       {"percent", 100 * sums[best].item<double>() / total},
                       {"area_percent", 100.0 * static_cast<double>(where.numel()) / static_cast<double>(h * w)},
                       {"centre", {row, col}},
                       {"region", words_region(r3, c3)}});
  }
  const std::string kind = spec.rfind("slic:", 0) == 0 || spec.rfind("felzenszwalb:", 0) == 0 ? "superpixel"
                           : spec.rfind("grid:", 0) == 0                                        ? "grid cell"
                                                                                                : "segment";
  return {{"features", spec}, {"kind", kind}, {"samples", samples}};
}

// Whether each sample's top class holds under a tiny perturbation, for the explanation in words:
// kStabilityCopies copies with Gaussian noise of 1% of the input's scale (tabular rows: each
// feature's standard deviation in the reference rows, else each value's magnitude; other inputs:
// the sample's standard deviation over its values). Seeded; null for regressions, token ids and
// outputs that are not one row of scores per sample.
constexpr int64_t kStabilityCopies = 16;
constexpr double kStabilityPercent = 1.0;

nlohmann::json prediction_stability(const Model& model, const at::Tensor& inputs, const at::Tensor& output,
                                    const at::Tensor& reference) {
  if (model.output_kind() == "regression" || !inputs.is_floating_point() || !output.defined() || output.dim() != 2 ||
      output.size(1) < 2 || output.size(0) != inputs.size(0))
    return nullptr;
  at::NoGradGuard no_grad;
  const at::Tensor x = inputs.detach();
  const int64_t n = x.size(0);
  at::Tensor scale;
  std::string described;
  if (x.dim() == 2 && reference.defined()) {
    scale = reference.to(x.options()).std(0).unsqueeze(0).expand_as(x);
    described = "each feature's standard deviation in the reference rows";
  } else if (x.dim() == 2) {
    scale = x.abs();
    described = "each value's magnitude";
  } else {
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[0] = n;
    scale = x.flatten(1).std(1).view(shape).expand_as(x);
    described = "the sample's standard deviation over its values";
  }
  const at::Tensor top = output.argmax(1).cpu();
  at::Generator gen = detail::seeded_generator(0, 0x57ab);
  std::vector<int64_t> changed(static_cast<size_t>(n)), other(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> rows_shape = x[i].sizes().vec();
    rows_shape.insert(rows_shape.begin(), kStabilityCopies);
    const at::Tensor noise = at::randn(rows_shape, gen, at::TensorOptions().dtype(at::kFloat)).to(x.options());
    const at::Tensor rows = x[i].unsqueeze(0) + noise * (scale[i].unsqueeze(0) * (kStabilityPercent / 100.0));
    const at::Tensor predicted = model.forward(rows).reshape({kStabilityCopies, -1}).argmax(1).cpu();
    const at::Tensor differs = predicted != top[i];
    changed[static_cast<size_t>(i)] = differs.sum().item<int64_t>();
    other[static_cast<size_t>(i)] =
        changed[static_cast<size_t>(i)] > 0 ? std::get<0>(at::mode(predicted.masked_select(differs))).item<int64_t>() : -1;
  }
  return {{"copies", kStabilityCopies}, {"noise_percent", kStabilityPercent}, {"scale", described},
          {"changed", changed},          {"most_common_other", other},        {"seed", 0}};
}

// --per-step: the explanation of rows [N * T] (row i*T + t-1: sample i, log p(token_t | tokens < t))
// becomes attributions_steps.npy [N, T, L] (attributions.npy: the same), steps.json (per sample:
// the tokens, and per step the token, its log-probability and the attribution row), steps_<s>.png
// (the [T, L] matrix of the first kMaxMapSamples samples) and attribution.json. `a` is left
// holding the [N, T, L] values and the output at the N inputs.
std::vector<Artifact> per_step_artifacts(Attribution& a, const Model& model, const LoadedInput& input,
                                         const at::Tensor& output, int64_t steps, const std::string& token_reduction,
                                         const HeatmapOptions& heatmap) {
  const int64_t n = input.batch.size(0), l = input.batch.size(1);
  at::Tensor v = a.values.detach();
  if (v.dim() >= 3 && v.size(1) == l) {
    v = reduce_embedding(v, token_reduction);
    a.extra["token_reduction"] = token_reduction;
  }
  CANDELA_CHECK_T(ShapeMismatch, v.dim() == 2 && v.size(0) == n * steps && v.size(1) == l, a.method, " gives ",
                  detail::shape_str(a.values.sizes()), " for ", n * steps, " rows of ", l, " tokens, not one value per "
                  "token: --per-step needs a token attribution (a method over tokens, or a layer method at the "
                  "embedding).");
  v = v.reshape({n, steps, l}).to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor ids = input.batch.to(at::kLong).cpu().contiguous();
  const at::Tensor lp = at::log_softmax(output.to(at::kCPU, at::kDouble), 2).contiguous();
  auto va = v.accessor<float, 3>();
  auto ia = ids.accessor<int64_t, 2>();
  auto la = lp.accessor<double, 3>();
  nlohmann::json samples = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    nlohmann::json sample;
    sample["ids"] = std::vector<int64_t>(ids[i].data_ptr<int64_t>(), ids[i].data_ptr<int64_t>() + l);
    if (i < static_cast<int64_t>(input.tokens.size())) sample["tokens"] = input.tokens[i].tokens;
    sample["steps"] = nlohmann::json::array();
    for (int64_t t = 1; t <= steps; ++t) {
      const int64_t id = ia[i][t];
      nlohmann::json step{{"position", t}, {"id", id}, {"logprob", la[i][t - 1][id]}};
      if (i < static_cast<int64_t>(input.tokens.size())) step["token"] = input.tokens[i].tokens.at(t);
      std::vector<double> row(l);
      for (int64_t j = 0; j < l; ++j) row[j] = va[i][t - 1][j];
      step["attribution"] = row;
      sample["steps"].push_back(std::move(step));
    }
    samples.push_back(std::move(sample));
  }
  const std::string layout = "[N, T, L]: [sample, generated position t = 1..L-1 (row t-1), input position]";
  nlohmann::json steps_json{
      {"definition", "row t-1 of a sample explains log p(token_t | tokens < t): the log_softmax of the logits at "
                     "position t-1 (teacher forcing: the input holds the whole sequence). Input positions >= t are "
                     "what the method gives there (zero for a causal model)."},
      {"layout", layout},
      {"method", a.method},
      {"samples", std::move(samples)}};
  if (a.extra.contains("token_reduction")) steps_json["token_reduction"] = a.extra["token_reduction"];
  a.values = v;
  a.output = output.detach().cpu();
  a.target = "logprob per step (each position's own token)";
  a.extra["per_step"] = {{"file", "attributions_steps.npy"},
                         {"layout", layout},
                         {"steps", steps},
                         {"rows", "convergence_delta, output_change and warnings count rows: row i*T + (t-1) is "
                                  "sample i at position t"}};
  nlohmann::json meta = a.metadata();
  meta["model"] = model.source().empty() ? model.name() : model.source();
  meta["input_spec"] = model.input_spec().to_json();
  // attributions.npy holds the same [N, T, L], so that every explanation has one (the server's
  // /values reads it).
  std::vector<Artifact> out{render_npy("attributions_steps.npy", v), render_npy("attributions.npy", v),
                            render_json("steps.json", steps_json), render_json("attribution.json", meta)};
  HeatmapOptions o = heatmap;
  o.clip_percentile = 100.0;
  for (int64_t i = 0; i < std::min(n, kMaxMapSamples); ++i)
    out.push_back(render_png_raw("steps_" + std::to_string(i) + ".png", v[i], o));
  return out;
}

}  // namespace

void validate(const ExplainJob& job) { prepare(job); }

ExplainResult run(const ExplainJob& job, const RunControl& control) { return run(job, control, nullptr); }

ExplainResult run(const ExplainJob& job, const RunControl& control, ExplainContext* context) {
  // Validate everything cheap before loading anything heavy.
  PreparedExplain p = prepare(job);
  auto& explainer = p.explainer;
  const HeatmapOptions& heatmap = p.heatmap;
  Model model = load_model(job.model, job.spec);
  if (job.device != "cpu") model.to(job.device);
  const bool token_model = model.input_spec().layout == "NL";
  LoadedInput input =
      token_model ? load_token_input(job.input, model) : load_input(job.input, model.input_spec());
  infer_layout_from(model, input.batch, control);
  if (!input.display.defined() && model.input_spec().is_image()) input.display = to_display(input.batch, model.input_spec());
  if (!job.feature_names.empty()) input.feature_names = read_names(job.feature_names);
  nlohmann::json forward_args = nlohmann::json::object();
  model = bind_forward_args(model, job.mask, job.forward_args, input.batch, forward_args);
  const bool tabular = !token_model && !input.display.defined() && input.batch.dim() == 2;
  CANDELA_CHECK(job.training_data.empty() || tabular, "--training-data places tabular features among training rows; ",
                job.input, " is not a table of rows (drop --training-data).");
  if (tabular && (!job.training_data.empty() || !job.background.empty())) {
    const std::string& rows = !job.training_data.empty() ? job.training_data : job.background;
    input.reference = load_input(rows, InputSpec{}).batch;
    CANDELA_CHECK_T(ShapeMismatch, input.reference.dim() == 2 && input.reference.size(1) == input.batch.size(1), rows,
                    " holds ", detail::shape_str(input.reference.sizes()), " but each input row is [", input.batch.size(1),
                    "]: give training rows with the same columns.");
  }
  ExplainRequest req;
  req.inputs = input.batch.to(c10::Device(model.device()));
  // A language model's outputs are its vocabulary: targets may name tokens (logprob:POS:TOKEN).
  std::vector<std::string> names = model.class_names();
  if (names.empty() && token_model) names = model_vocabulary(model);
  at::Tensor lm_output;  // --per-step: the output at the inputs, [N, L, V]
  int64_t steps = 0;
  if (job.per_step) {
    CANDELA_CHECK(token_model, "--per-step explains a language model's tokens, but this model's input is not token "
                  "ids (layout NL); drop --per-step, or give --layout NL for a model that takes ids.");
    CANDELA_CHECK(job.target.empty() || job.target == "top1", "--per-step explains every position's own token "
                  "(log p(token_t | tokens < t), t = 1..L-1); drop --target '", job.target, "' (or drop --per-step "
                  "and explain one position with --target logprob:POS).");
    {
      at::NoGradGuard no_grad;
      lm_output = model.forward(req.inputs).detach();
    }
    CANDELA_CHECK_T(ShapeMismatch, lm_output.dim() == 3 && lm_output.size(1) == req.inputs.size(1),
                    "--per-step needs a language model: an output [N, L, V] of next-token logits at each of the L "
                    "input positions; this model gives ", detail::shape_str(lm_output.sizes()), ".");
    PerStepRequest ps = per_step_request(input.batch);
    steps = ps.steps;
    req.inputs = ps.inputs.to(c10::Device(model.device()));
    req.target = Target::parse(ps.target, names);
    // Each sample's forward arguments follow it into its steps.
    std::vector<std::pair<std::string, at::Tensor>> per_row;
    for (const auto& [name, t] : model.forward_args())
      per_row.emplace_back(name, t.size(0) > 1 ? t.repeat_interleave(steps, 0) : t);
    if (!per_row.empty()) model = model.with_forward_args(std::move(per_row));
  } else {
    req.target = Target::parse(token_model ? fill_target_tokens(job.target, input.batch) : job.target, names);
  }
  req.baseline = p.baseline;
  if (!job.features.empty()) {
    req.feature_mask = make_feature_mask(job.features, input.batch, model.input_spec(), input.display);
    if (steps > 0 && req.feature_mask.size(0) == input.batch.size(0) && input.batch.size(0) > 1)
      req.feature_mask = req.feature_mask.repeat_interleave(steps, 0);
  }
  req.eval = eval_options(job.budget, control);

  ExplainResult result;
  result.attribution = explainer->explain(model, req);
  if (!forward_args.empty()) result.attribution.extra["forward_args"] = forward_args;
  // The runner-up class explained too, for the words' contrast (tables and token models).
  at::Tensor runner_up_values;
  std::vector<int64_t> runner_up;
  if (job.explain_in_words && (tabular || token_model) && result.attribution.output.defined() &&
      result.attribution.output.dim() == 2 && result.attribution.output.size(1) >= 2 &&
      static_cast<int64_t>(result.attribution.targets.size()) == req.inputs.size(0)) {
    const at::Tensor top2 = std::get<1>(result.attribution.output.detach().cpu().topk(2, 1));
    for (int64_t i = 0; i < top2.size(0); ++i) {
      // The class after the explained one: the runner-up, or the top class when another was explained.
      const int64_t t = result.attribution.targets[static_cast<size_t>(i)];
      runner_up.push_back(top2[i][0].item<int64_t>() == t ? top2[i][1].item<int64_t>() : top2[i][0].item<int64_t>());
    }
    ExplainRequest other = req;
    other.target = Target::indices(runner_up);
    runner_up_values = explainer->explain(model, other).values.detach().cpu();
    if (token_model && runner_up_values.dim() >= 3) runner_up_values = reduce_embedding(runner_up_values, job.token_reduction);
  }
  auto attach_contrast = [&](Attribution& a) {
    if (runner_up_values.defined() && runner_up_values.sizes() == a.values.sizes())
      a.extra["contrast"] = {{"classes", runner_up}, {"values", detail::tensor_to_json(runner_up_values)}};
  };
  // Which image segment holds the most evidence, when the method attributed to segments.
  if (req.feature_mask.defined() && input.display.defined() && job.features != "each" && result.attribution.layer.empty() &&
      !result.attribution.spatial_map && result.attribution.values.dim() == 4 &&
      result.attribution.values.sizes() == req.feature_mask.sizes()) {
    const bool nhwc = model.input_spec().layout == "NHWC";
    const at::Tensor v = result.attribution.values.detach().cpu(), m = req.feature_mask.cpu();
    result.attribution.extra["segments"] =
        segment_summary(nhwc ? v.permute({0, 3, 1, 2}) : v, nhwc ? m.permute({0, 3, 1, 2}) : m, job.features);
  }
  if (job.explain_in_words && !token_model) {
    const nlohmann::json stability =
        prediction_stability(model, req.inputs, result.attribution.output, input.reference);
    if (!stability.is_null()) result.attribution.extra["prediction_stability"] = stability;
  }
  std::vector<Artifact> attention_maps;
  if (!job.per_step && Registry::builtin().get(job.method).family == "attention")
    attention_maps = attention_map_artifacts(result.attribution, model, req.inputs, heatmap);
  if (job.per_step) {
    result.artifacts = per_step_artifacts(result.attribution, model, input, lm_output, steps, job.token_reduction,
                                          heatmap);
    req.inputs = input.batch.to(c10::Device(model.device()));
  } else if (token_model) {
    // Token results: one value per token ([N, L, D] at an embedding is reduced, and the method's
    // own values kept in attributions_embedding.npy), then per-token JSON and highlighted text.
    Attribution& a = result.attribution;
    const int64_t n = req.inputs.size(0), l = req.inputs.size(1);
    at::Tensor embedding;
    if (a.values.dim() >= 3 && a.values.size(0) == n && a.values.size(1) == l) {
      embedding = a.values;
      a.values = reduce_embedding(a.values, job.token_reduction);
      a.extra["token_reduction"] = job.token_reduction;
    }
    const bool per_token = a.values.dim() == 2 && a.values.size(1) == l && !a.spatial_map;
    attach_contrast(a);
    nlohmann::json tokens;
    if (per_token) {
      tokens = token_json(a.values, input.tokens, job.aggregate, job.word_reduction);
      a.extra["aggregate"] = job.aggregate;
      if (job.aggregate == "word") a.extra["word_reduction"] = job.word_reduction;
    }
    result.artifacts = render_explanation(a, model, input, heatmap);
    if (embedding.defined()) result.artifacts.push_back(render_npy("attributions_embedding.npy", embedding.detach().cpu()));
    if (per_token) {
      result.artifacts.push_back(render_json("tokens.json", tokens));
      result.artifacts.push_back(Artifact{"tokens.html", "text/html",
                                          render_tokens_html(tokens, a.method + " on " + model.name())});
    }
  } else {
    Attribution& a = result.attribution;
    attach_contrast(a);
    result.artifacts = render_explanation(a, model, input, heatmap);
  }
  result.artifacts.insert(result.artifacts.end(), attention_maps.begin(), attention_maps.end());
  if (!job.out.empty()) result.files = write_artifacts(job.out, result.artifacts);
  if (context) {
    context->model = std::make_shared<Model>(std::move(model));
    context->input = std::move(input);
    context->explainer = std::move(explainer);
    context->request = std::move(req);
  }
  return result;
}

// ---- evaluate, audit, info -----------------------------------------------------------------

namespace {

EvaluateConfig evaluate_config(const EvaluateJob& job, const RunControl& control) {
  validate_forward_args(job.mask, job.forward_args);
  EvaluateConfig c;
  c.methods = job.methods;
  c.metrics = job.metrics;
  CANDELA_CHECK(job.method_options.is_object() && job.metric_options.is_object(),
                "method_options and metric_options must be JSON objects {\"NAME\": {\"KEY\": VALUE}}.");
  for (const auto& [name, o] : job.method_options.items()) c.method_options[name] = o;
  for (const auto& [name, o] : job.metric_options.items()) c.metric_options[name] = o;
  c.baseline = Baseline::parse(job.baseline);
  c.chunk = job.chunk;
  c.bootstrap = job.bootstrap;
  c.seed = job.seed;
  c.eval = eval_options(job.budget, control);
  c.eval.progress = {};  // evaluate reports per unit of work instead
  c.progress = control.evaluate_progress;
  c.validate();
  CANDELA_CHECK(job.max_samples >= 0, "--max-samples must be >= 0 (0 = all), got ", job.max_samples, ".");
  return c;
}

}  // namespace

void validate(const EvaluateJob& job) { evaluate_config(job, {}); }

nlohmann::json run(const EvaluateJob& job, const RunControl& control) {
  EvaluateConfig c = evaluate_config(job, control);
  Model model = load_model(job.model, job.spec);
  Dataset data = load_dataset(job.data, job.labels, job.masks, model.input_spec(), job.max_samples);
  infer_layout_from(model, data.inputs, control);
  nlohmann::json described = nlohmann::json::object();
  model = bind_forward_args(model, job.mask, job.forward_args, data.inputs, described);
  // --max-samples keeps the first samples, and so the first rows of each forward argument.
  std::vector<std::pair<std::string, at::Tensor>> args;
  for (const auto& [name, t] : model.forward_args())
    args.emplace_back(name, t.size(0) > data.inputs.size(0) && job.max_samples > 0 ? t.slice(0, 0, data.inputs.size(0)) : t);
  if (!args.empty()) model = model.with_forward_args(std::move(args));
  return evaluate(model, data, c, job.out);
}

nlohmann::json run(const AuditJob& job, const RunControl& control) {
  AuditConfig c;
  c.method = job.method;
  Registry::builtin().get(job.method);  // an unknown name fails here, before the model loads
  CANDELA_CHECK(job.options.is_object(), "the options of ", job.method, " must be a JSON object, got ",
                job.options.dump(), ".");
  c.method_options = job.options;
  c.baseline = Baseline::parse(job.baseline);
  c.window = job.window;
  c.factor = job.factor;
  c.min_fraction = job.min_fraction;
  c.clusters = job.clusters;
  c.seed = job.seed;
  c.eval = eval_options(job.budget, control);
  CANDELA_CHECK(job.max_samples >= 0, "--max-samples must be >= 0 (0 = all), got ", job.max_samples, ".");
  Model model = load_model(job.model, job.spec);
  Dataset data = load_dataset(job.data, job.labels, "", model.input_spec(), job.max_samples);
  infer_layout_from(model, data.inputs, control);
  nlohmann::json r = audit_shortcuts(model, data, c);
  if (!job.out.empty()) write_artifacts(job.out, {render_json("audit.json", r)});
  return r;
}

// ---- recommend -------------------------------------------------------------------------------

std::string masks_beside(const std::string& data) {
  namespace fs = std::filesystem;
  const fs::path p(data);
  if (p.extension() != ".npy") return "";
  const std::string stem = p.stem().string();
  std::vector<std::string> names;
  if (stem.rfind("x_", 0) == 0) names.push_back("masks_" + stem.substr(2));
  names.push_back(stem + "_masks");
  for (const std::string suffix : {"_ids", "_x"})
    if (stem.size() > suffix.size() && stem.compare(stem.size() - suffix.size(), suffix.size(), suffix) == 0)
      names.push_back(stem.substr(0, stem.size() - suffix.size()) + "_masks");
  std::error_code ec;
  for (const auto& n : names) {
    const fs::path m = p.parent_path() / (n + ".npy");
    if (fs::is_regular_file(m, ec)) return m.string();
  }
  return "";
}

namespace {

// A fresh temporary folder, removed with everything in it when the object dies.
struct ScratchFolder {
  std::string path;
  ScratchFolder() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "candela-recommend-XXXXXX").string();
    CANDELA_CHECK_T(IoError, mkdtemp(tmpl.data()) != nullptr, "cannot create a temporary folder in ",
                    std::filesystem::temp_directory_path().string(), "; set TMPDIR to a writable folder.");
    path = tmpl;
  }
  ~ScratchFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

RecommendResult run(const RecommendJob& job, const RunControl& control) {
  namespace fs = std::filesystem;
  using json = nlohmann::json;
  // Everything cheap first.
  CANDELA_CHECK(!job.model.empty(), "give the model with --model.");
  CANDELA_CHECK(!job.data.empty(), "give the samples with --data (a .npy array, a folder of images, or a folder "
                                   "holding x_test.npy).");
  CANDELA_CHECK(job.samples >= 1, "--samples must be >= 1, got ", job.samples, ".");
  CANDELA_CHECK(job.bootstrap >= 0, "--bootstrap must be >= 0, got ", job.bootstrap, ".");
  for (const auto& m : job.methods) Registry::builtin().get(m);
  CANDELA_CHECK(job.method_options.is_object(), "method_options must be a JSON object {\"METHOD\": {\"KEY\": VALUE}}.");
  for (const auto& [name, o] : job.method_options.items()) {
    Registry::builtin().get(name);
    CANDELA_CHECK(job.methods.empty() || std::find(job.methods.begin(), job.methods.end(), name) != job.methods.end(),
                  "options are given for method '", name, "', which is not among --methods.");
  }
  const Baseline baseline = Baseline::parse(job.baseline);
  std::string data_file = job.data;
  std::error_code ec;
  if (fs::is_directory(job.data, ec) && fs::is_regular_file(fs::path(job.data) / "x_test.npy", ec))
    data_file = (fs::path(job.data) / "x_test.npy").string();
  const std::string masks = !job.masks.empty() ? job.masks : masks_beside(data_file);
  if (job.masks.empty() && !masks.empty() && control.note) control.note("ground truth: " + masks + " (beside the data)");

  Model model = load_model(job.model, job.spec);
  Dataset data = load_dataset(data_file, job.labels, masks, model.input_spec(), job.samples);
  infer_layout_from(model, data.inputs, control);
  const InputSpec& spec = model.input_spec();
  const at::Tensor& x = data.inputs;
  const std::string kind = spec.layout == "NL" ? "tokens"
                           : (x.dim() == 4 && (spec.layout == "NCHW" || spec.layout == "NHWC")) ? "images"
                                                                                                : "tables";
  const int64_t features = kind == "images" ? spec.layout == "NCHW" ? x.size(2) * x.size(3) : x.size(1) * x.size(2)
                                            : x[0].numel();
  std::string embedding;
  if (kind == "tokens")
    for (const auto& l : model.layers())
      if (l.type.find("Embedding") != std::string::npos && l.output_shape.size() == 3 && l.output_shape[1] == x.size(1)) {
        embedding = l.name;
        break;
      }
  RecommendSetup setup;
  {
    // A named embedding layer stands in for the one found.
    const std::string given = job.method_options.contains("layer_integrated_gradients") &&
                                      job.method_options["layer_integrated_gradients"].contains("layers") &&
                                      !job.method_options["layer_integrated_gradients"]["layers"].empty()
                                  ? job.method_options["layer_integrated_gradients"]["layers"][0].get<std::string>()
                                  : embedding;
    setup = recommend_setup(kind, features, data.masks.defined(), model.output_kind() == "regression",
                            model.module() != nullptr, given, job.randomisation_threshold, baseline.is_distribution());
  }
  EvaluateConfig c;
  c.eval = eval_options(job.budget, control);
  c.eval.progress = {};
  json skipped = json::array();
  const bool defaults = job.methods.empty();
  std::vector<std::string> candidates = defaults ? setup.methods : job.methods;
  for (const auto& [name, o] : job.method_options.items()) {
    std::string run_names;
    for (const auto& m : candidates) run_names += (run_names.empty() ? "" : ", ") + m;
    CANDELA_CHECK(std::find(candidates.begin(), candidates.end(), name) != candidates.end(), "options are given for method '",
                  name, "', which is not among the methods run (", run_names, "); add it with --methods.");
  }
  for (const auto& m : candidates) {
    json o = setup.method_options.count(m) ? setup.method_options[m] : json::object();
    if (job.method_options.contains(m))
      for (const auto& [k, v] : job.method_options[m].items()) o[k] = v;
    if (defaults) {
      // A default method that cannot explain this model (no rule for a layer, no attention map)
      // is skipped with the reason; a method the user named fails the run with it.
      try {
        auto explainer = Registry::builtin().create(m, o);
        ExplainRequest req;
        req.inputs = x.slice(0, 0, 1);
        req.baseline = baseline;
        req.eval = c.eval;
        explainer->explain(model, req);
      } catch (const Cancelled&) {
        throw;
      } catch (const std::exception& e) {
        std::string why = e.what();
        std::replace(why.begin(), why.end(), '\n', ' ');
        skipped.push_back({{"method", m}, {"reason", why}});
        if (control.note) control.note("skipped " + m + ": " + why);
        continue;
      }
    }
    c.methods.push_back(m);
    if (!o.empty()) c.method_options[m] = o;
  }
  CANDELA_CHECK(!c.methods.empty(), "none of the default methods runs on this model (", skipped.dump(),
                "); name methods with --methods.");
  c.metrics = setup.metrics;
  c.metric_options = setup.metric_options;
  c.baseline = baseline;
  c.chunk = std::max<int64_t>(1, (x.size(0) + 3) / 4);  // four chunks: four cost measurements per method
  c.bootstrap = job.bootstrap;
  c.seed = job.seed;
  c.progress = control.evaluate_progress;
  std::map<std::string, std::vector<double>> seconds;  // per method: seconds per sample, one per chunk
  c.timing = [&](const std::string& method, int64_t samples, double s) {
    seconds[method].push_back(s / static_cast<double>(std::max<int64_t>(1, samples)));
  };
  const auto start = std::chrono::steady_clock::now();
  ScratchFolder scratch;
  const json evaluation = evaluate(model, data, c, scratch.path);
  json summary = evaluation["summary"];
  json cost = {{"higher_is_better", false}, {"methods", json::object()}};
  for (const auto& m : c.methods) {
    const auto ci = bootstrap_mean(seconds[m], job.bootstrap, static_cast<uint64_t>(job.seed) + 1);
    cost["methods"][m] = {{"mean", ci[0]}, {"ci95", {ci[1], ci[2]}}, {"n", seconds[m].size()}};
  }
  summary["seconds_per_sample"] = cost;
  json report = rank_recommendations(summary, c.methods, setup.plan);
  json method_options = json::object();
  for (const auto& [k, v] : c.method_options) method_options[k] = v;
  json metric_options = json::object();
  for (const auto& [k, v] : c.metric_options) metric_options[k] = v;
  report["model"] = job.model;
  report["data"] = data_file;
  report["ground_truth"] = data.masks.defined() ? json(masks) : json();
  report["kind"] = kind;
  report["samples"] = x.size(0);
  report["methods"] = c.methods;
  report["methods_default"] = defaults;
  if (defaults) report["methods_reason"] = setup.methods_reason;
  report["skipped"] = skipped;
  report["method_options"] = method_options;
  report["metrics"] = c.metrics;
  report["metric_options"] = metric_options;
  report["randomisation_threshold"] = job.randomisation_threshold;
  report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report["summary"] = summary;
  RecommendResult r;
  r.report = report;
  r.artifacts = {render_json("recommend.json", report), render_markdown("recommend.md", recommend_markdown(report)),
                 Artifact{"results.csv", "text/csv", read_file(scratch.path + "/results.csv", size_t{1} << 30)}};
  if (!job.out.empty()) r.files = write_artifacts(job.out, r.artifacts);
  return r;
}

// ---- refine ----------------------------------------------------------------------------------

namespace {

// The file `name` in folder `dir` when it exists, else "".
std::string file_in(const std::string& dir, const char* name) {
  std::error_code ec;
  const std::filesystem::path p = std::filesystem::path(dir) / name;
  return std::filesystem::is_regular_file(p, ec) ? p.string() : std::string();
}

// A bool/int .npy with one entry per sample; `flag` names it in errors.
at::Tensor read_marks(const std::string& path, int64_t n, const char* flag) {
  const at::Tensor t = read_npy(path).reshape({-1});
  CANDELA_CHECK(t.size(0) == n, flag, " ", path, " has ", t.size(0), " entries for ", n,
                " images; give one true/false per image.");
  return t.ne(0);
}

// The interventional check behind an audit's finding: every image's region replaced by the same
// region of another image (image i takes image (i + n/2) mod n's), and how the model's top-1
// answer moves: the share of predictions that change and the mean |change| of the probability of
// the class first predicted. A model that does not use the region scores 0 on both.
nlohmann::json region_reliance(const Model& model, const at::Tensor& x, const ImageRegion& r) {
  at::NoGradGuard no_grad;
  const int64_t n = x.size(0);
  const bool nhwc = model.input_spec().layout == "NHWC";
  const at::Tensor perm = (at::arange(n, at::kLong) + n / 2).remainder(n);
  at::Tensor swapped = x.clone();
  const int64_t hd = nhwc ? 1 : 2, wd = nhwc ? 2 : 3;
  swapped.slice(hd, r.y0, r.y1).slice(wd, r.x0, r.x1)
      .copy_(x.index_select(0, perm).slice(hd, r.y0, r.y1).slice(wd, r.x0, r.x1));
  int64_t flips = 0;
  double delta = 0;
  for (int64_t b = 0; b < n; b += 500) {
    const int64_t e = std::min(n, b + 500);
    const at::Tensor p0 = model.forward(x.slice(0, b, e)).softmax(1), p1 = model.forward(swapped.slice(0, b, e)).softmax(1);
    const at::Tensor top = p0.argmax(1, true);
    flips += p1.argmax(1, true).ne(top).sum().item<int64_t>();
    delta += (p1.gather(1, top) - p0.gather(1, top)).abs().sum().item<double>();
  }
  return {{"prediction_flip_rate", static_cast<double>(flips) / static_cast<double>(n)},
          {"mean_abs_delta_probability", delta / static_cast<double>(n)},
          {"samples", n},
          {"definition", "each image's region replaced by image (i + n/2) mod n's; share of top-1 predictions that "
                         "change, mean |change| of the first top-1 class's softmax probability"}};
}

nlohmann::json split_accuracy(const Model& model, const std::map<std::string, std::pair<at::Tensor, at::Tensor>>& splits) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, xy] : splits)
    out[name] = {{"accuracy", top1_accuracy(model, xy.first, xy.second)}, {"samples", xy.first.size(0)}};
  return out;
}

}  // namespace

RefineResult run(const RefineJob& job, const RunControl& control) {
  job.options.validate();
  const ImageRegion region = ImageRegion::parse(job.region);
  Registry::builtin().get(job.audit_method);  // an unknown name fails here, before the model loads
  CANDELA_CHECK(job.audit_samples >= 0, "--audit-samples must be >= 0 (0 = all), got ", job.audit_samples, ".");
  CANDELA_CHECK(!job.data.empty(), "--data is required: a folder with x_train.npy and y_train.npy, or a .npy of "
                "training images with --labels.");
  std::string train_x = job.data, train_y = job.labels, test_x = job.test, test_y = job.test_labels,
              test_clean = job.test_clean, marked = job.marked, test_marked = job.test_marked;
  std::error_code ec;
  if (std::filesystem::is_directory(job.data, ec)) {
    train_x = file_in(job.data, "x_train.npy");
    CANDELA_CHECK(!train_x.empty(), "--data ", job.data, " is a folder without x_train.npy; give a folder with "
                  "x_train.npy and y_train.npy (the layout of the ground-truth shortcut set), or --data X.npy --labels Y.npy.");
    auto dflt = [&](std::string& v, const char* name) {
      if (v.empty()) v = file_in(job.data, name);
    };
    dflt(train_y, "y_train.npy");
    dflt(test_x, "x_test.npy");
    dflt(test_y, "y_test.npy");
    dflt(test_clean, "x_test_clean.npy");
    dflt(marked, "watermark_train.npy");
    dflt(test_marked, "watermark_test.npy");
  }
  CANDELA_CHECK(!train_y.empty(), "refine needs the training labels: give --labels Y.npy (class indices, one per "
                "image) or a --data folder with y_train.npy.");
  CANDELA_CHECK(test_x.empty() || !test_y.empty(), "--test ", test_x, " needs --test-labels (class indices).");
  CANDELA_CHECK(!test_clean.empty() ? !test_y.empty() : true, "--test-clean needs --test-labels (class indices).");

  Model model = load_model(job.model, job.spec);
  Dataset train = load_dataset(train_x, train_y, "", model.input_spec());
  infer_layout_from(model, train.inputs, control);
  const InputSpec& spec = model.input_spec();
  const at::Tensor y_train = train.labels.to(at::kLong).reshape({-1});
  if (train.inputs.dim() == 4 && (spec.layout == "NCHW" || spec.layout == "NHWC")) {
    const bool nhwc = spec.layout == "NHWC";
    const int64_t h = train.inputs.size(nhwc ? 1 : 2), w = train.inputs.size(nhwc ? 2 : 3);
    CANDELA_CHECK(region.y1 <= h && region.x1 <= w, "the region ", region.to_json().dump(), " reaches outside the ", h,
                  "x", w, " image; give rows < ", h, " and columns < ", w, ".");
  }

  // The evaluation splits: test, clean, and where the artefact's presence is known in training
  // and test, consistent (the artefact agrees with the class it marked in training) and
  // contradicting (it points to another class).
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> splits;
  nlohmann::json split_notes = nlohmann::json::object();
  Dataset test;
  if (!test_x.empty()) {
    test = load_dataset(test_x, test_y, "", spec);
    const at::Tensor yt = test.labels.to(at::kLong).reshape({-1});
    splits["test"] = {test.inputs, yt};
    split_notes["test"] = "the test images as given (" + test_x + ")";
    if (!test_clean.empty()) {
      Dataset clean = load_dataset(test_clean, test_y, "", spec);
      CANDELA_CHECK(clean.inputs.sizes() == test.inputs.sizes(), "--test-clean ", test_clean, " must match --test ",
                    test_x, " image for image: shapes ", detail::shape_str(clean.inputs.sizes()), " and ",
                    detail::shape_str(test.inputs.sizes()), ".");
      splits["clean"] = {clean.inputs, yt};
      split_notes["clean"] = "the test images without the artefact (" + test_clean + ")";
    }
    if (!marked.empty() && !test_marked.empty()) {
      const at::Tensor mk = read_marks(marked, y_train.size(0), "--marked");
      const at::Tensor tmk = read_marks(test_marked, yt.size(0), "--test-marked");
      auto majority = [&](const at::Tensor& sel) -> int64_t {
        const at::Tensor ys = y_train.masked_select(sel);
        return ys.numel() == 0 ? -1 : at::bincount(ys).argmax().item<int64_t>();
      };
      const int64_t with = majority(mk), without = majority(mk.logical_not());
      const at::Tensor expected = at::where(tmk, at::full_like(yt, with), at::full_like(yt, without));
      const at::Tensor consistent = expected.eq(yt);
      const at::Tensor ci = consistent.nonzero().reshape({-1}), xi = consistent.logical_not().nonzero().reshape({-1});
      splits["consistent"] = {test.inputs.index_select(0, ci), yt.index_select(0, ci)};
      splits["contradicting"] = {test.inputs.index_select(0, xi), yt.index_select(0, xi)};
      split_notes["consistent"] = str_cat("test images whose label is the class the artefact's presence marked in "
                                          "training (with it: class ", with, ", without: class ", without, ")");
      split_notes["contradicting"] = "the other test images: the artefact points away from their label";
    }
  }
  splits["train"] = {train.inputs, y_train};
  split_notes["train"] = "the training images as given, unmodified";

  AuditConfig audit;
  audit.method = job.audit_method;
  audit.region = {region.y0, region.x0, region.y1, region.x1};
  audit.eval.cancel = control.cancel;
  Dataset audit_data;
  audit_data.inputs = test.inputs.defined() ? test.inputs : train.inputs;
  if (job.audit_samples > 0 && audit_data.inputs.size(0) > job.audit_samples)
    audit_data.inputs = audit_data.inputs.slice(0, 0, job.audit_samples);
  auto trimmed_audit = [&](const Model& m) {
    nlohmann::json a = audit_shortcuts(m, audit_data, audit);
    a.erase("sample_shares");
    return a;
  };

  const nlohmann::json before = split_accuracy(model, splits);
  const nlohmann::json audit_before = trimmed_audit(model);
  const nlohmann::json reliance_before = region_reliance(model, audit_data.inputs, region);
  Refined refined = refine_model(model, train.inputs, y_train, region, job.options, control.refine_epoch, control.cancel);
  Model after_model = Model::from_module(*refined.module, spec);
  after_model.set_class_names(model.class_names());
  const nlohmann::json after = split_accuracy(after_model, splits);
  const nlohmann::json audit_after = trimmed_audit(after_model);
  const nlohmann::json reliance_after = region_reliance(after_model, audit_data.inputs, region);
  const ImageRegion found{audit_after["window"]["y0"].get<int64_t>(), audit_after["window"]["x0"].get<int64_t>(),
                          audit_after["window"]["y1"].get<int64_t>(), audit_after["window"]["x1"].get<int64_t>()};
  const bool gone = !audit_after["region"]["flagged"].get<bool>() &&
                    !(audit_after["suspected"].get<bool>() && found.overlaps(region));

  nlohmann::json epochs = nlohmann::json::array();
  for (const auto& e : refined.epochs) epochs.push_back(e.to_json());
  nlohmann::json options = {{"method", job.options.method}, {"epochs", job.options.epochs}, {"lr", job.options.lr},
                            {"batch_size", job.options.batch_size}, {"seed", job.options.seed},
                            {"l2_params", job.options.l2_params}};
  if (job.options.method == "rrr") options["l2_grads"] = job.options.l2_grads;
  else options["fill"] = job.options.fill;
  nlohmann::json report = {
      {"model", job.model},
      {"region", region.to_json()},
      {"options", options},
      {"training", {{"data", train_x}, {"samples", train.inputs.size(0)}, {"epochs", epochs}}},
      {"splits", split_notes},
      {"accuracy", {{"before", before}, {"after", after}}},
      {"audit", {{"method", job.audit_method}, {"samples", audit_data.inputs.size(0)}, {"before", audit_before},
                 {"after", audit_after}, {"shortcut_gone", gone}}},
      {"reliance", {{"before", reliance_before}, {"after", reliance_after}}}};

  // The refined model and its sidecar: the original sidecar with the input spec in force.
  nlohmann::json sidecar = nlohmann::json::object();
  if (!model.source().empty()) {
    std::filesystem::path side(model.source());
    side.replace_extension(".json");
    if (std::filesystem::is_regular_file(side, ec)) {
      nlohmann::json j = nlohmann::json::parse(read_file(side.string(), 64 << 20), nullptr, false);
      if (j.is_object()) sidecar = j;
    }
  }
  sidecar["input"] = spec.to_json();
  if (!model.class_names().empty()) sidecar["classes"] = model.class_names();
  sidecar["output"] = model.output_kind();
  RefineResult result;
  result.report = report;
  result.artifacts = {Artifact{"model.pt", "application/octet-stream", module_bytes(*refined.module)},
                      render_json("model.json", sidecar), render_json("refine.json", report)};
  if (!job.out.empty()) result.files = write_artifacts(job.out, result.artifacts);
  return result;
}

nlohmann::json run(const PredictJob& job, const RunControl& control) {
  CANDELA_CHECK(job.top_k >= 1, "top_k must be >= 1, got ", job.top_k, ".");
  Model model = load_model(job.model, job.spec);
  // Token models read text (a .txt file, one text per line) or token ids, as explain does.
  LoadedInput input = model.input_spec().layout == "NL" ? load_token_input(job.input, model)
                                                        : load_input(job.input, model.input_spec());
  infer_layout_from(model, input.batch, control);
  return predict_top_k(model, input.batch, job.top_k);
}

nlohmann::json predict_top_k(const Model& model, const at::Tensor& batch, int64_t top_k) {
  CANDELA_CHECK(top_k >= 1, "top_k must be >= 1, got ", top_k, ".");
  at::NoGradGuard no_grad;
  // The plain forward: the model was just loaded, and forward_inference would first build its
  // frozen graph for this one call.
  at::Tensor y = model.forward(batch.to(c10::Device(model.device()))).to(at::kCPU, at::kFloat);
  CANDELA_CHECK(y.dim() == 2, "predict needs a model with outputs [N, classes], got ", y.sizes().vec().size(),
                " dimensions.");
  const std::string kind = model.output_kind();
  at::Tensor p = kind == "logits" ? y.softmax(1) : y;
  const int64_t k = std::min<int64_t>(top_k, y.size(1));
  auto [values, indices] = p.topk(k, 1);
  const auto& names = model.class_names();
  nlohmann::json samples = nlohmann::json::array();
  for (int64_t i = 0; i < y.size(0); ++i) {
    nlohmann::json top = nlohmann::json::array();
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = indices[i][j].item<int64_t>();
      nlohmann::json e = {{"class", c}, {"score", values[i][j].item<double>()}};
      if (c < static_cast<int64_t>(names.size())) e["name"] = names[c];
      top.push_back(e);
    }
    samples.push_back({{"top", top}});
  }
  return {{"output_kind", kind}, {"classes", y.size(1)}, {"samples", samples}};
}

// ---- robustness --------------------------------------------------------------------------

RobustnessJobResult run(const RobustnessJob& job, const RunControl& control) {
  job.options.validate();
  CANDELA_CHECK(job.max_samples >= 0, "--max-samples must be >= 0 (0 = all), got ", job.max_samples, ".");
  Model model = load_model(job.model, job.spec);
  Dataset data = load_dataset(job.data, job.labels, "", model.input_spec(), job.max_samples);
  infer_layout_from(model, data.inputs, control);
  RobustnessJobResult out;
  out.result = probe_robustness(model, data.inputs, data.labels, job.options, eval_options(job.budget, control));
  const RobustnessResult& r = out.result;
  nlohmann::json report = r.report;
  report["model"] = job.model;
  report["data"] = job.data;
  std::vector<Artifact>& a = out.artifacts;
  a.push_back(render_npy("adversarial.npy", r.adversarial.reshape(data.inputs.sizes())));
  a.push_back(render_npy("perturbation.npy", r.perturbation.reshape(data.inputs.sizes())));
  // For images, the perturbation as a heatmap next to the attribution map of the same row.
  nlohmann::json maps = nlohmann::json::array();
  const InputSpec& spec = model.input_spec();
  if (spec.is_image()) {
    const int64_t n = std::min<int64_t>(job.options.max_maps, r.perturbation.size(0));
    auto chw = [&](const at::Tensor& t) { return spec.layout == "NHWC" ? t.permute({2, 0, 1}) : t; };
    HeatmapOptions signed_map;
    signed_map.sign = "signed";
    HeatmapOptions abs_map;
    abs_map.sign = "absolute";
    for (int64_t i = 0; i < n; ++i) {
      const std::string s = "_" + std::to_string(i) + ".png";
      nlohmann::json m = {{"index", i}, {"perturbation", "perturbation" + s}};
      a.push_back(render_png_raw("perturbation" + s, chw(r.perturbation[i]), signed_map));
      if (r.attribution.defined()) {
        a.push_back(render_png_raw("attribution" + s, chw(r.attribution[i]), abs_map));
        a.push_back(render_png_raw("attribution_perturbed" + s, chw(r.attribution_perturbed[i]), abs_map));
        m["attribution"] = "attribution" + s;
        m["attribution_perturbed"] = "attribution_perturbed" + s;
      }
      maps.push_back(m);
    }
  }
  report["maps"] = maps;
  a.push_back(render_json("robustness.json", report));
  if (!job.out.empty()) out.files = write_artifacts(job.out, a);
  return out;
}

// ---- counterfactual ------------------------------------------------------------------------

namespace {

// The target class of every row: an index, a class name, or "opposite" (binary models).
at::Tensor counterfactual_targets(const CounterfactualJob& job, const Model& model, const at::Tensor& logits) {
  CANDELA_CHECK(logits.dim() == 2, "counterfactuals need a classifier with outputs [N, C], got ",
                detail::shape_str(logits.sizes()), ".");
  const at::Tensor pred = logits.argmax(1);
  const int64_t classes = logits.size(1);
  if (job.target == "opposite") {
    CANDELA_CHECK(classes == 2, "--target opposite is for binary models; this one has ", classes,
                  " classes: give a class index or name.");
    return 1 - pred;
  }
  const auto& cn = model.class_names();
  long long idx = -1;
  auto it = std::find(cn.begin(), cn.end(), job.target);
  if (it != cn.end()) idx = it - cn.begin();
  else CANDELA_CHECK(detail::parse_int64(job.target, idx), "--target must be a class index, a class name or opposite; got '",
                     job.target, "'.", did_you_mean(job.target, cn));
  CANDELA_CHECK(idx >= 0 && idx < classes, "--target ", idx, " is out of range: the model has ", classes, " classes.");
  return at::full({logits.size(0)}, static_cast<int64_t>(idx), at::kLong);
}

// Images: a sparse pixel change within the spec's range (image_counterfactuals); no background.
CounterfactualJobResult run_image_counterfactual(const CounterfactualJob& job, const Model& model,
                                                 const LoadedInput& input, const RunControl& control) {
  at::Tensor logits;
  {
    at::NoGradGuard no_grad;
    logits = model.forward(input.batch.to(at::kFloat));
  }
  const at::Tensor target = counterfactual_targets(job, model, logits), pred = logits.argmax(1);
  ImageCounterfactualOptions o;
  o.learning_rate = job.options.image_learning_rate;
  o.l1_weight = job.options.l1_weight;
  o.kappa = job.options.kappa;
  o.max_iter = job.options.wachter_max_iter;
  o.early_stop = job.options.early_stop;
  const ImageCounterfactualResult r =
      image_counterfactuals(model, input.batch, target, o, eval_options(job.budget, control));
  CounterfactualJobResult out;
  out.result.counterfactuals = r.counterfactuals;
  out.result.valid = r.valid;
  out.result.predictions = r.predictions;
  out.result.targets = r.targets;
  nlohmann::json report = r.report;
  report["model"] = job.model;
  report["input"] = job.input;
  for (auto& row : report["rows"]) row["query_prediction"] = pred[row["index"].get<int64_t>()].item<int64_t>();
  const InputSpec& spec = model.input_spec();
  auto chw = [&](const at::Tensor& t) { return spec.layout == "NHWC" ? t.permute({2, 0, 1}) : t; };
  HeatmapOptions signed_map;
  signed_map.sign = "signed";
  std::vector<Artifact>& a = out.artifacts;
  a.push_back(render_npy("counterfactuals.npy", r.counterfactuals));
  a.push_back(render_npy("change.npy", r.change));
  nlohmann::json maps = nlohmann::json::array();
  for (int64_t i = 0; i < std::min<int64_t>(r.change.size(0), 16); ++i) {
    const std::string name = "change_" + std::to_string(i) + ".png";
    a.push_back(render_png_raw(name, chw(r.change[i]), signed_map));
    maps.push_back({{"index", i}, {"change", name}});
  }
  report["maps"] = maps;
  a.push_back(render_json("counterfactuals.json", report));
  out.result.report = std::move(report);
  if (!job.out.empty()) out.files = write_artifacts(job.out, out.artifacts);
  return out;
}

}  // namespace

CounterfactualJobResult run(const CounterfactualJob& job, const RunControl& control) {
  job.options.validate();
  // CSV rows are tabular: say what is missing before loading anything (an .npy may hold images).
  const bool csv_rows = job.input.size() >= 4 && job.input.compare(job.input.size() - 4, 4, ".csv") == 0;
  CANDELA_CHECK(!job.background.empty() || !csv_rows, "counterfactuals of tabular rows need --background rows (.csv or "
                ".npy, e.g. the training set): they give each feature's range and MAD.");
  nlohmann::json constraints_json = nlohmann::json::object();
  if (!job.constraints.empty()) {
    const std::string text = read_file(job.constraints, 16 << 20);
    try {
      constraints_json = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw ParseError(str_cat(job.constraints, " is not valid JSON (", e.what(), "); see `candela counterfactual --help`."));
    }
  }
  Model model = load_model(job.model, job.spec);
  LoadedInput input = load_input(job.input, model.input_spec());
  if (model.input_spec().is_image() && input.batch.dim() >= 3) return run_image_counterfactual(job, model, input, control);
  CANDELA_CHECK(!job.background.empty(), "counterfactuals of tabular rows need --background rows (.csv or .npy, e.g. "
                "the training set): they give each feature's range and MAD.");
  LoadedInput bg = load_input(job.background, model.input_spec());
  CANDELA_CHECK(input.batch.dim() == 2, "counterfactuals are for tabular rows [N, F]; ", job.input, " has shape ",
                detail::shape_str(input.batch.sizes()), ".");
  const int64_t f = input.batch.size(1);
  std::vector<std::string> names = input.feature_names;
  if (names.empty()) names = model.feature_names();
  if (names.empty()) names = bg.feature_names;
  if (static_cast<int64_t>(names.size()) != f) {
    names.clear();
    for (int64_t i = 0; i < f; ++i) names.push_back("x" + std::to_string(i));
  }
  const FeatureConstraints constraints = FeatureConstraints::from_json(constraints_json, names, f);

  // The target class of every row.
  at::Tensor logits;
  {
    at::NoGradGuard no_grad;
    logits = model.forward(input.batch.to(at::kFloat));
  }
  const at::Tensor target = counterfactual_targets(job, model, logits), pred = logits.argmax(1);
  CounterfactualJobResult out;
  out.result = counterfactuals(model, input.batch, bg.batch, target, constraints, job.options, eval_options(job.budget, control));
  const CounterfactualResult& r = out.result;

  // counterfactuals.csv: each row's query, then its counterfactuals.
  std::vector<std::vector<std::string>> csv;
  std::vector<std::string> header = {"row", "kind"};
  header.insert(header.end(), names.begin(), names.end());
  header.insert(header.end(), {"prediction", "target", "valid"});
  csv.push_back(header);
  auto num = [](double v) {
    std::ostringstream o;
    o << std::setprecision(9) << v;
    return o.str();
  };
  const int64_t n = input.batch.size(0), k = job.options.count;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<std::string> q = {std::to_string(i), "query"};
    for (int64_t j = 0; j < f; ++j) q.push_back(num(input.batch[i][j].item<double>()));
    q.insert(q.end(), {std::to_string(pred[i].item<int64_t>()), std::to_string(target[i].item<int64_t>()), ""});
    csv.push_back(q);
    for (int64_t c = 0; c < k; ++c) {
      std::vector<std::string> row = {std::to_string(i), "counterfactual_" + std::to_string(c)};
      for (int64_t j = 0; j < f; ++j) row.push_back(num(r.counterfactuals[i][c][j].item<double>()));
      row.insert(row.end(), {std::to_string(r.predictions[i][c].item<int64_t>()), std::to_string(target[i].item<int64_t>()),
                             r.valid[i][c].item<bool>() ? "true" : "false"});
      csv.push_back(row);
    }
  }
  nlohmann::json report = r.report;
  report["model"] = job.model;
  report["input"] = job.input;
  report["feature_names"] = names;
  // Changes named by feature, and each row's query and prediction.
  for (auto& row : report["rows"]) {
    const int64_t i = row["index"].get<int64_t>();
    row["prediction"] = pred[i].item<int64_t>();
    row["query"] = detail::tensor_to_json(input.batch[i]);
    for (auto& cf : row["counterfactuals"]) {
      nlohmann::json named = nlohmann::json::object();
      for (const auto& [j, change] : cf["changes"].items()) named[names[std::stoll(j)]] = change;
      cf["changes"] = named;
    }
  }
  out.artifacts = {render_csv("counterfactuals.csv", csv), render_json("counterfactuals.json", report)};
  if (!job.out.empty()) out.files = write_artifacts(job.out, out.artifacts);
  return out;
}

nlohmann::json run(const InfoJob& job, const RunControl&) {
  Model model = load_model(job.model, job.spec);
  const auto& spec = model.input_spec();
  nlohmann::json out = {{"model", job.model}, {"input", spec.to_json()}, {"output_kind", model.output_kind()},
                        {"classes", model.class_names().size()}, {"class_names", model.class_names()}};
  if (!model.feature_names().empty()) out["feature_names"] = model.feature_names();
  // What forward() takes after the input: --mask and --forward-arg give these.
  out["forward_parameters"] = nlohmann::json::array();
  for (const auto& p : model.forward_parameters())
    out["forward_parameters"].push_back({{"name", p.name}, {"type", p.type}, {"has_default", p.has_default}});
  std::vector<int64_t> out_shape;
  out["layers"] = nlohmann::json::array();
  if (!spec.shape.empty()) {
    std::vector<int64_t> shape = {1};
    shape.insert(shape.end(), spec.shape.begin(), spec.shape.end());
    at::NoGradGuard no_grad;
    auto y = model.forward(at::zeros(shape));
    out_shape.assign(y.sizes().begin(), y.sizes().end());
    for (const auto& l : model.layers())
      out["layers"].push_back({{"name", l.name}, {"type", l.type}, {"output_shape", l.output_shape}, {"calls", l.calls}});
  }
  out["output_shape"] = out_shape;
  return out;
}

}  // namespace candela
