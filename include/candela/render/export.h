// Writing an explanation to a folder in formats people already use.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "candela/core/attribution.h"
#include "candela/core/model.h"
#include "candela/io/input.h"
#include "candela/render/heatmap.h"

namespace candela {

// A file rendered in memory: its name in the output folder, media type and bytes. Renderers
// return artifacts; one writer puts them on disk, and a server can send them as they are.
struct Artifact {
  std::string name, media_type, bytes;
};

// One pure renderer per format: each makes one artifact and touches no file.
Artifact render_npy(std::string name, const at::Tensor& values);
// Indented two spaces, ending with a newline.
Artifact render_json(std::string name, const nlohmann::json& value);
// rows[0] is the header; fields with a comma, quote or line break are quoted (RFC 4180).
Artifact render_csv(std::string name, const std::vector<std::vector<std::string>>& rows);
Artifact render_markdown(std::string name, std::string text);
// A [C, H, W] (or [H, W]) map over an image [C, H, W] of the same size, or alone.
Artifact render_png_overlay(std::string name, const at::Tensor& map, const at::Tensor& image,
                            const HeatmapOptions& heatmap);
Artifact render_png_raw(std::string name, const at::Tensor& map, const HeatmapOptions& heatmap);

// What attribution.json holds: the attribution's metadata, the model and its input spec,
// target names, the tabular rows (every feature with value and attribution, largest first) and
// the heatmap files' names (`heatmaps`: their suffixes, "" for one sample, "_0", "_1", ... for several).
nlohmann::json explanation_json(const Attribution& attribution, const Model& model, const LoadedInput& input,
                                const std::vector<std::string>& heatmaps);

// attributions.npy, attribution.json and, for image inputs, heatmap.png (overlay) and
// heatmap_raw.png (heatmap_<i>.png / heatmap_raw_<i>.png for several samples). Pure: touches
// no file.
std::vector<Artifact> render_explanation(const Attribution& attribution, const Model& model, const LoadedInput& input,
                                         const HeatmapOptions& heatmap);

// Writes every artifact into `out_dir` (created if missing), each atomically; on an error
// nothing new is left behind. Returns the paths written.
std::vector<std::string> write_artifacts(const std::string& out_dir, const std::vector<Artifact>& artifacts);

// render_explanation, then write_artifacts.
std::vector<std::string> write_explanation(const std::string& out_dir, const Attribution& attribution,
                                           const Model& model, const LoadedInput& input,
                                           const HeatmapOptions& heatmap);

}  // namespace candela
