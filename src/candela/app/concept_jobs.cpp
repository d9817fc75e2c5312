// The jobs of "what has the network learned": `candela visualize` (and `candela tcav`).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "candela/app/jobs.h"
#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/detail/text.h"
#include "candela/io/dataset.h"
#include "candela/io/image.h"
#include "candela/io/input.h"

namespace candela {
namespace {

Model load_job_model(const std::string& path, const SpecOverrides& spec) {
  Model model = Model::load(path);
  spec.apply(model);
  return model;
}

// [C, H, W] in [0, 1] -> PNG (grey for one channel, RGB for three).
Artifact image_png(std::string name, const at::Tensor& chw) {
  at::Tensor u8 = (chw.detach().to(at::kFloat).clamp(0, 1) * 255.0).round().to(at::kByte);
  if (u8.size(0) == 1) return {std::move(name), "image/png", encode_png(u8[0].contiguous())};
  CANDELA_CHECK(u8.size(0) == 3, "cannot draw an image with ", u8.size(0), " channels as PNG (1 or 3 only).");
  return {std::move(name), "image/png", encode_png(u8.permute({1, 2, 0}).contiguous())};
}

// Images [N, C, H, W] in a grid of `columns`, 2-pixel white gaps.
at::Tensor grid(const at::Tensor& images, int64_t columns) {
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3), gap = 2;
  columns = std::max<int64_t>(1, std::min(columns, n));
  const int64_t rows = (n + columns - 1) / columns;
  at::Tensor out = at::ones({c, rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap}, images.options());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i / columns, col = i % columns;
    out.narrow(1, r * (h + gap), h).narrow(2, col * (w + gap), w).copy_(images[i]);
  }
  return out;
}

int64_t channels_of(const Model& model, const std::string& layer) {
  for (const auto& l : model.layers())
    if (l.name == layer) {
      CANDELA_CHECK(l.output_shape.size() >= 2, "layer ", layer, " has no channels (output shape ",
                    detail::shape_str(l.output_shape), ").");
      return l.output_shape[1];
    }
  std::vector<std::string> names;
  for (const auto& l : model.layers()) names.push_back(l.name);
  throw InvalidArgument(detail::str_cat("unknown layer '", layer, "'.", did_you_mean(layer, names),
                                        " `candela info MODEL` lists the layers."));
}

// A class index or one of the model's class names.
int64_t class_index(const Model& model, const std::string& text) {
  long long t = 0;
  if (detail::parse_int64(text, t)) {
    CANDELA_CHECK(t >= 0, "--target must be a class index >= 0 or a class name, got ", text, ".");
    return t;
  }
  const auto& names = model.class_names();
  const auto it = std::find(names.begin(), names.end(), text);
  CANDELA_CHECK(it != names.end(), "--target '", text, "' is neither a class index nor a class name of the model.",
                did_you_mean(text, names));
  return it - names.begin();
}

}  // namespace

VisualizeResult run(const VisualizeJob& job, const RunControl& control) {
  job.options.validate();
  CANDELA_CHECK(!job.channels.empty() || !job.objective.empty() || job.atlas,
                "nothing to visualise: give --channel C (with --layer), --objective TEXT or --atlas (with --layer).");
  CANDELA_CHECK(job.layer.empty() == false || (job.channels.empty() && !job.atlas),
                "--channel and --atlas need --layer (a layer name from `candela info MODEL`).");
  CANDELA_CHECK(job.atlas_channels >= 0, "--atlas-channels must be >= 0 (0: all), got ", job.atlas_channels, ".");
  CANDELA_CHECK(job.top_k >= 1, "--top-k must be >= 1, got ", job.top_k, ".");
  CANDELA_CHECK(job.atlas_batch >= 1, "--atlas-batch must be >= 1, got ", job.atlas_batch, ".");
  CANDELA_CHECK(job.data.empty() || !job.channels.empty() || job.atlas,
                "--data gives dataset examples for each --channel and atlas channel; give --channel C or --atlas.");
  CANDELA_CHECK(job.maco_spectrum.empty() || job.options.param == "maco",
                "--maco-spectrum sets the fixed magnitude of --param maco; add --param maco or drop it.");
  for (int64_t c : job.channels) CANDELA_CHECK(c >= 0, "--channel must be >= 0, got ", c, ".");
  Objective free_objective;
  if (!job.objective.empty()) free_objective = Objective::parse(job.objective);
  Model model = load_job_model(job.model, job.spec);
  int64_t layer_channels = 0;
  if (!job.layer.empty() && (!job.channels.empty() || job.atlas)) {
    layer_channels = channels_of(model, job.layer);
    for (int64_t c : job.channels)
      CANDELA_CHECK(c < layer_channels, "--channel ", c, " is out of range: layer ", job.layer, " has ", layer_channels,
                    " channels (0..", layer_channels - 1, ").");
  }
  const bool maco = job.options.param == "maco";
  FeatureVisualizationOptions options = job.options.resolved();
  if (!job.maco_spectrum.empty()) {
    CANDELA_CHECK(model.input_spec().is_image(), "--maco-spectrum needs an image model (give --input-shape C,H,W).");
    Dataset d = load_dataset(job.maco_spectrum, "", "", model.input_spec(), 0);
    options.magnitude = maco_magnitude(to_display(d.inputs, model.input_spec()), options.size);
  }

  VisualizeResult out;
  nlohmann::json results = nlohmann::json::array();
  double wall = 0;
  int64_t evaluations = 0;
  // MACO's transparency of images [N, C, H, W] as plot_maco shows it, side by side.
  auto alpha_png = [&](const std::string& name, const at::Tensor& alpha, int64_t columns) {
    std::vector<at::Tensor> shown;
    for (int64_t i = 0; i < alpha.size(0); ++i) shown.push_back(maco_alpha_display(alpha[i]).unsqueeze(0).unsqueeze(0));
    out.artifacts.push_back(image_png(name, grid(at::cat(shown), columns)));
  };
  auto add = [&](const std::string& name, const Objective& obj, const FeatureVisualization& fv) {
    // A batch of images side by side.
    out.artifacts.push_back(image_png(name + ".png", grid(fv.images, fv.images.size(0))));
    nlohmann::json r = {{"name", name},
                        {"objective", obj.to_string()},
                        {"file", name + ".png"},
                        {"curve", fv.objective},
                        {"final", fv.objective.back()},
                        {"wall_seconds", fv.wall_seconds}};
    if (fv.alpha.defined()) {
      alpha_png(name + "_alpha.png", fv.alpha, fv.alpha.size(0));
      r["alpha_file"] = name + "_alpha.png";
    }
    if (obj.terms.size() > 1) {
      nlohmann::json terms = nlohmann::json::array();
      for (size_t i = 0; i < obj.terms.size(); ++i)
        terms.push_back({{"term", Objective{{obj.terms[i]}}.to_string()}, {"curve", fv.terms[i]}});
      r["terms"] = terms;
    }
    results.push_back(r);
    wall += fv.wall_seconds;
    evaluations += fv.model_evaluations;
  };
  const int64_t atlas_n =
      job.atlas ? (job.atlas_channels > 0 ? std::min(layer_channels, job.atlas_channels) : layer_channels) : 0;
  const int64_t atlas_columns = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(std::max<int64_t>(atlas_n, 1)))));
  // Dataset examples next to each channel's image and for each channel of the atlas.
  nlohmann::json examples = nlohmann::json::object();
  if (!job.data.empty()) {
    Dataset d = load_dataset(job.data, "", "", model.input_spec(), 0);
    CANDELA_CHECK(model.input_spec().is_image(), "dataset examples need an image model (give --input-shape C,H,W).");
    const at::Tensor display = to_display(d.inputs, model.input_spec());
    std::vector<int64_t> wanted = job.channels;
    for (int64_t c = 0; c < atlas_n; ++c)
      if (std::find(wanted.begin(), wanted.end(), c) == wanted.end()) wanted.push_back(c);
    const auto found = dataset_examples(model, job.layer, wanted, d.inputs, job.top_k);
    std::vector<at::Tensor> atlas_rows;
    for (size_t w = 0; w < wanted.size(); ++w) {
      const int64_t c = wanted[w];
      std::vector<at::Tensor> crops;
      nlohmann::json list = nlohmann::json::array();
      for (const DatasetExample& e : found[w]) {
        at::Tensor crop = display[e.index].narrow(1, e.top, e.bottom - e.top).narrow(2, e.left, e.right - e.left);
        crops.push_back(at::upsample_bilinear2d(crop.unsqueeze(0), {64, 64}, /*align_corners=*/false));
        list.push_back({{"index", e.index},
                        {"id", e.index < static_cast<int64_t>(d.ids.size()) ? d.ids[e.index] : std::to_string(e.index)},
                        {"activation", e.activation},
                        {"peak", e.peak},
                        {"position", {e.y, e.x}},
                        {"receptive_field", {{"top", e.top}, {"left", e.left}, {"bottom", e.bottom}, {"right", e.right}}}});
      }
      at::Tensor row = at::cat(crops).clamp(0, 1);
      nlohmann::json entry = {{"examples", list}};
      if (std::find(job.channels.begin(), job.channels.end(), c) != job.channels.end()) {
        const std::string file = "channel_" + std::to_string(c) + "_examples.png";
        out.artifacts.push_back(image_png(file, grid(row, row.size(0))));
        entry["file"] = file;
      }
      if (c < atlas_n) {
        // Row c of atlas_examples.png; short rows are padded white to top_k.
        at::Tensor padded = at::ones({job.top_k, row.size(1), row.size(2), row.size(3)}, row.options());
        padded.narrow(0, 0, row.size(0)).copy_(row);
        if (atlas_rows.size() <= static_cast<size_t>(c)) atlas_rows.resize(static_cast<size_t>(c) + 1);
        atlas_rows[static_cast<size_t>(c)] = padded;
        entry["atlas_file"] = "atlas_examples.png";
        entry["atlas_row"] = c;
      }
      examples[std::to_string(c)] = entry;
    }
    if (!atlas_rows.empty())
      out.artifacts.push_back(image_png("atlas_examples.png", grid(at::cat(atlas_rows), job.top_k)));
  }
  for (int64_t c : job.channels) {
    ObjectiveTerm t;
    t.kind = "channel";
    t.layer = job.layer;
    t.channel = c;
    Objective obj{{t}};
    add("channel_" + std::to_string(c), obj, visualize(model, obj, options, control.progress, control.cancel));
  }
  if (!free_objective.terms.empty())
    add("objective", free_objective, visualize(model, free_objective, options, control.progress, control.cancel));

  nlohmann::json opts = options_to_json(options);
  if (maco) opts["magnitude"] = job.maco_spectrum.empty() ? "1/f^decay_power" : "mean |FFT| of " + job.maco_spectrum;
  nlohmann::json report = {{"model", job.model}, {"layer", job.layer}, {"options", opts}};
  if (job.atlas) {
    const int64_t n = atlas_n;
    // MACO optimises one image at a time: its atlas runs channel by channel.
    const int64_t batch = maco ? 1 : job.atlas_batch;
    std::vector<at::Tensor> images, alphas;
    nlohmann::json curves = nlohmann::json::array();
    for (int64_t first = 0; first < n; first += batch) {
      const int64_t k = std::min(batch, n - first);
      Objective obj;
      for (int64_t i = 0; i < k; ++i) {
        ObjectiveTerm t;
        t.kind = "channel";
        t.layer = job.layer;
        t.channel = first + i;
        t.batch = i;  // image i maximises channel first + i
        obj.terms.push_back(t);
      }
      FeatureVisualizationOptions o = options;
      o.batch = k;
      o.seed = options.seed + first;
      FeatureVisualization fv = visualize(model, obj, o, control.progress, control.cancel);
      images.push_back(fv.images);
      if (fv.alpha.defined()) alphas.push_back(fv.alpha);
      for (int64_t i = 0; i < k; ++i)
        curves.push_back({{"channel", first + i}, {"curve", fv.terms[static_cast<size_t>(i)]}});
      wall += fv.wall_seconds;
      evaluations += fv.model_evaluations;
    }
    at::Tensor all = at::cat(images);
    out.artifacts.push_back(image_png("atlas.png", grid(all, atlas_columns)));
    report["atlas"] = {{"file", "atlas.png"}, {"channels", n}, {"columns", atlas_columns}, {"curves", curves}};
    if (!alphas.empty()) {
      alpha_png("atlas_alpha.png", at::cat(alphas), atlas_columns);
      report["atlas"]["alpha_file"] = "atlas_alpha.png";
    }
  }
  // The minimal form's contract: with one objective, `objective` is its curve (the quantity maximised).
  if (results.size() == 1) report["objective"] = results[0]["curve"];
  report["results"] = results;
  if (!examples.empty()) {
    report["dataset_examples"] = examples;
    report["data"] = job.data;
  }
  report["wall_seconds"] = wall;
  report["model_evaluations"] = evaluations;
  out.report = report;
  out.artifacts.push_back(render_json("visualization.json", report));
  if (!job.out.empty()) out.files = write_artifacts(job.out, out.artifacts);
  return out;
}

// ---- tcav ----------------------------------------------------------------------------------

nlohmann::json run(const TcavJob& job, const RunControl& control) {
  job.options.validate();
  CANDELA_CHECK(!job.layer.empty(), "tcav needs --layer (a layer name from `candela info MODEL`).");
  CANDELA_CHECK(!job.input.empty(), "tcav needs --input: samples of the target class (a folder of images or a .npy).");
  CANDELA_CHECK(!job.target.empty(), "tcav needs --target: the class whose sensitivity is tested (index or name).");
  CANDELA_CHECK(!job.concepts.empty(), "tcav needs at least one --concept NAME=FOLDER.");
  CANDELA_CHECK(job.randoms.size() >= 3, "tcav needs at least 3 --random sets (folders or .npy files), got ",
                job.randoms.size(), ".");
  CANDELA_CHECK(job.max_samples >= 0, "--max-samples must be >= 0 (0: all), got ", job.max_samples, ".");
  std::vector<std::pair<std::string, std::string>> concepts;
  for (const auto& c : job.concepts) {
    const auto eq = c.find('=');
    CANDELA_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < c.size(), "--concept takes NAME=PATH, got '", c,
                  "' (e.g. --concept stripes=concepts/stripes/).");
    concepts.emplace_back(c.substr(0, eq), c.substr(eq + 1));
  }
  Model model = load_job_model(job.model, job.spec);
  const int64_t target = class_index(model, job.target);
  auto load = [&](const std::string& path) {
    Dataset d = load_dataset(path, "", "", model.input_spec(), job.max_samples);
    return d.inputs;
  };
  at::Tensor inputs = load(job.input);
  std::vector<ConceptSet> concept_sets, random_sets;
  for (const auto& [name, path] : concepts) concept_sets.push_back({name, load(path)});
  for (size_t i = 0; i < job.randoms.size(); ++i)
    random_sets.push_back({"random_" + std::to_string(i), load(job.randoms[i])});
  ActivationCache cache(job.cache == "none" ? "" : job.cache.empty() ? ActivationCache::default_dir() : job.cache);
  nlohmann::json report = tcav(model, job.layer, inputs, target, concept_sets, random_sets, job.options, cache,
                               control.progress, control.cancel);
  report["model"] = job.model;
  report["input"] = job.input;
  if (target < static_cast<int64_t>(model.class_names().size())) report["target_name"] = model.class_names()[target];
  for (size_t i = 0; i < concepts.size(); ++i) report["concepts"][i]["path"] = concepts[i].second;
  report["random"]["paths"] = job.randoms;
  if (!job.out.empty()) write_artifacts(job.out, {render_json("tcav.json", report)});
  return report;
}

// ---- craft ---------------------------------------------------------------------------------

CraftJobResult run(const CraftJob& job, const RunControl& control) {
  job.options.validate();
  CANDELA_CHECK(!job.layer.empty(), "craft needs --layer (after a ReLU; see `candela info MODEL`).");
  CANDELA_CHECK(!job.input.empty(), "craft needs --input: images of the class (a folder or a .npy).");
  CANDELA_CHECK(!job.target.empty(), "craft needs --target: the class (index or name).");
  CANDELA_CHECK(job.top_patches >= 1, "--top-patches must be >= 1, got ", job.top_patches, ".");
  Model model = load_job_model(job.model, job.spec);
  const int64_t target = class_index(model, job.target);
  Dataset d = load_dataset(job.input, "", "", model.input_spec(), 0);
  {
    InputSpec s = model.input_spec();
    const std::string note = infer_layout(s, d.inputs);
    if (!note.empty()) {
      model.set_input_spec(s);
      if (control.note) control.note(note);
    }
  }
  CraftResult r = craft(model, job.layer, d.inputs, target, job.options, control.progress, control.cancel);
  CraftJobResult out;
  const InputSpec& spec = model.input_spec();
  // Concepts by importance, most important first.
  at::Tensor order = std::get<1>(r.importances.sort(0, /*descending=*/true));
  nlohmann::json concepts = nlohmann::json::array();
  for (int64_t j = 0; j < order.size(0); ++j) {
    const int64_t k = order[j].item<int64_t>();
    const int64_t shown = std::min(job.top_patches, r.u.size(0));
    at::Tensor top = std::get<1>(r.u.select(1, k).topk(shown));
    at::Tensor patches = r.patches.index_select(0, top);
    at::Tensor display = spec.is_image() ? to_display(patches, spec) : patches;
    const std::string file = "concept_" + std::to_string(j) + ".png";
    out.artifacts.push_back(image_png(file, grid(display.clamp(0, 1), shown)));
    std::vector<int64_t> idx(top.data_ptr<int64_t>(), top.data_ptr<int64_t>() + shown);
    concepts.push_back({{"rank", j},
                        {"concept", k},
                        {"importance", r.importances[k].item<double>()},
                        {"file", file},
                        {"top_patches", idx}});
  }
  out.report = {{"model", job.model},
                {"layer", job.layer},
                {"input", job.input},
                {"target", target},
                {"images", d.inputs.size(0)},
                {"patches", r.patches.size(0)},
                {"nmf_relative_error", r.nmf_relative_error},
                {"options", options_to_json(job.options)},
                {"importance", "total Sobol indices (Jansen's estimator), averaged over the images"},
                {"concepts", concepts}};
  out.artifacts.push_back(render_json("craft.json", out.report));
  if (!job.out.empty()) out.files = write_artifacts(job.out, out.artifacts);
  return out;
}

// ---- crp -----------------------------------------------------------------------------------

nlohmann::json run(const CrpJob& job, const RunControl& control) {
  job.lrp.validate();
  CANDELA_CHECK(!job.layer.empty(), "crp needs --layer (see `candela info MODEL`).");
  CANDELA_CHECK(!job.input.empty(), "crp needs --input: an image or a .npy.");
  CANDELA_CHECK(job.top_channels >= 1 && job.top_k >= 1, "--top-channels and --top-k must be >= 1.");
  Model model = load_job_model(job.model, job.spec);
  LoadedInput in = load_input(job.input, model.input_spec());
  const int64_t n = in.batch.size(0);
  auto targets_for = [&](const at::Tensor& x) {
    if (job.target == "top1") {
      at::NoGradGuard no_grad;
      return model.forward(x).argmax(1);
    }
    return at::full({x.size(0)}, class_index(model, job.target), at::kLong);
  };
  at::Tensor targets = targets_for(in.batch);
  // Channel relevances first, then the heatmaps of the channels asked for (or the most relevant).
  CrpResult all = crp(model, job.layer, {}, in.batch, targets, job.lrp);
  const int64_t c = all.channel_relevance.size(1);
  for (int64_t ch : job.channels)
    CANDELA_CHECK(ch >= 0 && ch < c, "--channel ", ch, " is out of range: layer ", job.layer, " has ", c, " channels.");
  std::vector<Artifact> artifacts;
  nlohmann::json samples = nlohmann::json::array();
  HeatmapOptions heat;
  heat.sign = "signed";
  const bool image = model.input_spec().is_image() && in.batch.dim() == 4;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> chans = job.channels;
    if (chans.empty()) {
      at::Tensor top = std::get<1>(all.channel_relevance[i].topk(std::min(job.top_channels, c)));
      chans.assign(top.data_ptr<int64_t>(), top.data_ptr<int64_t>() + top.size(0));
    }
    CrpResult r = crp(model, job.layer, chans, in.batch.narrow(0, i, 1), targets.narrow(0, i, 1), job.lrp);
    nlohmann::json entries = nlohmann::json::array();
    const std::string suffix = n > 1 ? "_" + std::to_string(i) : "";
    for (size_t k = 0; k < chans.size(); ++k) {
      nlohmann::json e = {{"channel", chans[k]},
                          {"relevance", all.channel_relevance[i][chans[k]].item<double>()},
                          {"heatmap_sum", r.heatmaps[0][static_cast<int64_t>(k)].sum().item<double>()}};
      if (image) {
        at::Tensor map = r.heatmaps[0][static_cast<int64_t>(k)];
        if (model.input_spec().layout == "NHWC") map = map.permute({2, 0, 1});
        const std::string file = "channel_" + std::to_string(chans[k]) + suffix + ".png";
        artifacts.push_back(render_png_raw(file, map, heat));
        e["file"] = file;
      }
      entries.push_back(e);
    }
    if (image) {
      at::Tensor map = model.input_spec().layout == "NHWC" ? r.lrp[0].permute({2, 0, 1}) : r.lrp[0];
      artifacts.push_back(render_png_raw("lrp" + suffix + ".png", map, heat));
    }
    samples.push_back({{"target", targets[i].item<int64_t>()},
                       {"channel_relevance", detail::tensor_to_json(all.channel_relevance[i])},
                       {"lrp_sum", r.lrp.sum().item<double>()},
                       {"channels", entries}});
    if (control.progress) control.progress({"crp", i + 1, n});
  }
  nlohmann::json report = {{"model", job.model},
                           {"layer", job.layer},
                           {"input", job.input},
                           {"lrp", options_to_json(job.lrp)},
                           {"samples", samples}};
  if (!job.data.empty()) {
    CANDELA_CHECK(!job.channels.empty(), "--data finds reference samples for each --channel; give --channel C.");
    Dataset d = load_dataset(job.data, "", "", model.input_spec(), 0);
    at::Tensor dt = targets_for(d.inputs);
    nlohmann::json refs = nlohmann::json::object();
    for (int64_t ch : job.channels) {
      auto [idx, values] = crp_reference_samples(model, job.layer, ch, d.inputs, dt, job.top_k, job.lrp);
      nlohmann::json list = nlohmann::json::array();
      for (int64_t j = 0; j < idx.size(0); ++j) {
        const int64_t row = idx[j].item<int64_t>();
        list.push_back({{"index", row},
                        {"id", row < static_cast<int64_t>(d.ids.size()) ? d.ids[row] : std::to_string(row)},
                        {"relevance", values[j].item<double>()}});
      }
      refs[std::to_string(ch)] = list;
    }
    report["reference_samples"] = refs;
    report["data"] = job.data;
  }
  artifacts.push_back(render_json("crp.json", report));
  if (!job.out.empty()) write_artifacts(job.out, artifacts);
  return report;
}

}  // namespace candela
