#include "candela/render/export.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <numeric>

#include "candela/core/error.h"
#include "candela/io/file.h"
#include "candela/io/image.h"
#include "candela/io/npy.h"

namespace candela {
namespace fs = std::filesystem;

std::vector<Artifact> render_explanation(const Attribution& attribution, const Model& model, const LoadedInput& input,
                                         const HeatmapOptions& heatmap) {
  heatmap.validate();
  const auto& spec = model.input_spec();
  std::vector<Artifact> files;
  at::Tensor values = attribution.values.detach().to(at::kCPU);
  files.push_back({"attributions.npy", "application/octet-stream", npy_bytes(values)});
  nlohmann::json meta = attribution.metadata();
  meta["model"] = model.source().empty() ? model.name() : model.source();
  meta["input_spec"] = spec.to_json();
  if (!model.class_names().empty() && !attribution.targets.empty()) {
    std::vector<std::string> names;
    for (auto t : attribution.targets)
      names.push_back(t < static_cast<int64_t>(model.class_names().size()) ? model.class_names()[t] : "");
    meta["target_names"] = names;
  }
  // A map to draw over each image: input-space values in the input's layout, a CAM, or a
  // layer's spatial output, brought to the image's size.
  auto display_map = [&](int64_t i) -> at::Tensor {
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
    return spec.layout == "NHWC" ? a.permute({2, 0, 1}) : a;
  };
  // Tabular rows: every feature with its value and attribution, largest |attribution| first.
  if (!input.display.defined() && !attribution.spatial_map && attribution.layer.empty() && values.dim() == 2 &&
      input.batch.defined() && input.batch.sizes() == values.sizes()) {
    std::vector<std::string> names = !input.feature_names.empty() ? input.feature_names : model.feature_names();
    const int64_t n = values.size(0), f = values.size(1);
    at::Tensor vt = values.to(at::kDouble).contiguous(), xt = input.batch.to(at::kDouble).cpu().contiguous();
    auto v = vt.accessor<double, 2>(), x = xt.accessor<double, 2>();
    meta["features"] = nlohmann::json::array();
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int64_t> order(f);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return std::abs(v[i][a]) > std::abs(v[i][b]);
      });
      nlohmann::json rows = nlohmann::json::array();
      for (int64_t j : order)
        rows.push_back({{"feature", j < static_cast<int64_t>(names.size()) ? names[j] : "f" + std::to_string(j)},
                        {"index", j},
                        {"value", x[i][j]},
                        {"attribution", v[i][j]}});
      meta["features"].push_back(rows);
    }
  }
  if (input.display.defined() && display_map(0).defined()) {
    const int64_t n = values.size(0);
    meta["heatmaps"] = nlohmann::json::array();
    for (int64_t i = 0; i < n; ++i) {
      at::Tensor a = display_map(i);
      std::string suffix = n == 1 ? "" : "_" + std::to_string(i);
      files.push_back({"heatmap" + suffix + ".png", "image/png", encode_png(render_overlay(a, input.display[i], heatmap))});
      files.push_back({"heatmap_raw" + suffix + ".png", "image/png", encode_png(render_heatmap(a, heatmap))});
      meta["heatmaps"].push_back({{"overlay", "heatmap" + suffix + ".png"}, {"raw", "heatmap_raw" + suffix + ".png"}});
    }
  }
  files.push_back({"attribution.json", "application/json", meta.dump(2) + "\n"});
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
