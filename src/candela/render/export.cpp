#include "candela/render/export.h"
#include "candela/render/words.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <numeric>

#include "candela/core/error.h"
#include "candela/io/file.h"
#include "candela/io/image.h"
#include "candela/io/npy.h"
#include "candela/text/tokens.h"

namespace candela {
namespace fs = std::filesystem;

Artifact render_npy(std::string name, const at::Tensor& values) {
  return {std::move(name), "application/octet-stream", npy_bytes(values)};
}

Artifact render_json(std::string name, const nlohmann::json& value) {
  return {std::move(name), "application/json", value.dump(2) + "\n"};
}

Artifact render_csv(std::string name, const std::vector<std::vector<std::string>>& rows) {
  std::string out;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (i) out += ',';
      const std::string& f = row[i];
      if (f.find_first_of(",\"\r\n") == std::string::npos) {
        out += f;
        continue;
      }
      out += '"';
      for (char c : f) out += c == '"' ? std::string("\"\"") : std::string(1, c);
      out += '"';
    }
    out += '\n';
  }
  return {std::move(name), "text/csv", out};
}

Artifact render_markdown(std::string name, std::string text) {
  return {std::move(name), "text/markdown", std::move(text)};
}

Artifact render_png_overlay(std::string name, const at::Tensor& map, const at::Tensor& image,
                            const HeatmapOptions& heatmap) {
  return {std::move(name), "image/png", encode_png(render_overlay(map, image, heatmap))};
}

Artifact render_png_raw(std::string name, const at::Tensor& map, const HeatmapOptions& heatmap) {
  return {std::move(name), "image/png", encode_png(render_heatmap(map, heatmap))};
}

namespace {

// A map to draw over each image: input-space values in the input's layout, a CAM, or a layer's
// spatial output, brought to the image's size. Undefined where there is nothing to draw.
at::Tensor display_map(const Attribution& attribution, const at::Tensor& values, int64_t i, const Model& model,
                       const LoadedInput& input, const HeatmapOptions& heatmap) {
  if (!input.display.defined()) return {};
  at::Tensor a = values[i];
  if (attribution.spatial_map || !attribution.layer.empty()) {
    if (a.dim() != 3) return {};
    const int64_t h = input.display.size(2), w = input.display.size(3);
    if (a.size(1) == h && a.size(2) == w) return a;
    // A layer's channels are combined at its own resolution, as the heatmap would combine
    // them (a sum, or a sum of magnitudes), before the map is brought to the image's size:
    // 256 channels upsampled to 224x224 would take 100 MB to draw one map.
    if (a.size(0) > 1) a = heatmap.sign == "absolute" ? a.abs().sum(0, true) : a.sum(0, true);
    return at::upsample_bilinear2d(a.unsqueeze(0).to(at::kFloat), {h, w}, /*align_corners=*/false)[0];
  }
  return model.input_spec().layout == "NHWC" ? a.permute({2, 0, 1}) : a;
}

}  // namespace

nlohmann::json explanation_json(const Attribution& attribution, const Model& model, const LoadedInput& input,
                                const std::vector<std::string>& heatmaps) {
  const at::Tensor values = attribution.values.detach().to(at::kCPU);
  nlohmann::json meta = attribution.metadata();
  meta["model"] = model.source().empty() ? model.name() : model.source();
  meta["input_spec"] = model.input_spec().to_json();
  if (!model.class_names().empty() && !attribution.targets.empty()) {
    std::vector<std::string> names;
    for (auto t : attribution.targets)
      names.push_back(t < static_cast<int64_t>(model.class_names().size()) ? model.class_names()[t] : "");
    meta["target_names"] = names;
  }
  // Tabular rows: every feature with its value and attribution, largest |attribution| first.
  if (!input.display.defined() && input.tokens.empty() && !attribution.spatial_map && attribution.layer.empty() && values.dim() == 2 &&
      input.batch.defined() && input.batch.sizes() == values.sizes()) {
    std::vector<std::string> names = !input.feature_names.empty() ? input.feature_names : model.feature_names();
    const int64_t n = values.size(0), f = values.size(1);
    at::Tensor vt = values.to(at::kDouble).contiguous(), xt = input.batch.to(at::kDouble).cpu().contiguous();
    auto v = vt.accessor<double, 2>(), x = xt.accessor<double, 2>();
    // Each value's percentile among the reference rows: the share below it, ties counted half
    // (scipy's percentileofscore, kind "mean").
    const bool reference = input.reference.defined() && input.reference.dim() == 2 && input.reference.size(1) == f &&
                           input.reference.size(0) > 0;
    const at::Tensor ref = reference ? input.reference.to(at::kDouble).cpu() : at::Tensor();
    auto percentile = [&](int64_t j, double value) {
      const at::Tensor col = ref.select(1, j);
      const double below = (col < value).sum().item<double>(), equal = (col == value).sum().item<double>();
      return 100.0 * (below + 0.5 * equal) / static_cast<double>(col.size(0));
    };
    meta["features"] = nlohmann::json::array();
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int64_t> order(f);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return std::abs(v[i][a]) > std::abs(v[i][b]);
      });
      nlohmann::json rows = nlohmann::json::array();
      for (int64_t j : order) {
        rows.push_back({{"feature", j < static_cast<int64_t>(names.size()) ? names[j] : "f" + std::to_string(j)},
                        {"index", j},
                        {"value", x[i][j]},
                        {"attribution", v[i][j]}});
        if (reference) rows.back()["percentile"] = percentile(j, x[i][j]);
      }
      meta["features"].push_back(rows);
    }
    if (reference) meta["percentiles_from"] = {{"rows", input.reference.size(0)}};
  }
  // Token models: one value per token (and per word when pieces were merged), as tokens.json.
  if (!input.tokens.empty() && values.dim() == 2 && values.size(0) == static_cast<int64_t>(input.tokens.size()) &&
      !attribution.spatial_map) {
    bool fits = true;
    for (const auto& e : input.tokens) fits = fits && static_cast<int64_t>(e.ids.size()) == values.size(1);
    const std::string aggregate = attribution.extra.is_object() ? attribution.extra.value("aggregate", "token") : "token";
    const std::string reduction = attribution.extra.is_object() ? attribution.extra.value("word_reduction", "sum") : "sum";
    if (fits) meta["tokens"] = token_json(values, input.tokens, aggregate, reduction);
  }
  // In words, from these numbers (candela/render/words.h).
  const bool image = input.display.defined() && attribution.layer.empty() && (values.dim() == 4 || attribution.spatial_map);
  const bool nhwc = image && !attribution.spatial_map && model.input_spec().layout == "NHWC";
  meta["summary"] = explain_in_words(meta, nhwc ? values.permute({0, 3, 1, 2}) : values, image, model.class_names(),
                                     model.output_kind());
  if (!heatmaps.empty()) {
    meta["heatmaps"] = nlohmann::json::array();
    for (const auto& suffix : heatmaps)
      meta["heatmaps"].push_back({{"overlay", "heatmap" + suffix + ".png"}, {"raw", "heatmap_raw" + suffix + ".png"}});
  }
  return meta;
}

std::vector<Artifact> render_explanation(const Attribution& attribution, const Model& model, const LoadedInput& input,
                                         const HeatmapOptions& heatmap) {
  heatmap.validate();
  const at::Tensor values = attribution.values.detach().to(at::kCPU);
  std::vector<Artifact> files = {render_npy("attributions.npy", values)};
  std::vector<std::string> heatmaps;  // file name suffixes
  if (display_map(attribution, values, 0, model, input, heatmap).defined()) {
    const int64_t n = values.size(0);
    for (int64_t i = 0; i < n; ++i) {
      const at::Tensor a = display_map(attribution, values, i, model, input, heatmap);
      const std::string suffix = n == 1 ? "" : "_" + std::to_string(i);
      files.push_back(render_png_overlay("heatmap" + suffix + ".png", a, input.display[i], heatmap));
      files.push_back(render_png_raw("heatmap_raw" + suffix + ".png", a, heatmap));
      heatmaps.push_back(suffix);
    }
  }
  files.push_back(render_json("attribution.json", explanation_json(attribution, model, input, heatmaps)));
  return files;
}

std::vector<std::string> write_artifacts(const std::string& out_dir, const std::vector<Artifact>& files) {
  std::error_code ec;
  const bool existed = fs::exists(out_dir, ec);
  if (!existed) {
    fs::create_directories(out_dir, ec);
    CANDELA_CHECK_T(IoError, !ec, "cannot create output folder '", out_dir, "': ", ec.message(), ".");
  }
  std::vector<std::string> written;
  try {
    for (const auto& f : files) {
      std::string path = (fs::path(out_dir) / f.name).string();
      write_file_atomic(path, f.bytes);
      written.push_back(path);
    }
  } catch (...) {
    for (const auto& p : written) fs::remove(p, ec);
    if (!existed) fs::remove(out_dir, ec);
    throw;
  }
  return written;
}

std::vector<std::string> write_explanation(const std::string& out_dir, const Attribution& attribution,
                                           const Model& model, const LoadedInput& input,
                                           const HeatmapOptions& heatmap) {
  return write_artifacts(out_dir, render_explanation(attribution, model, input, heatmap));
}

}  // namespace candela
