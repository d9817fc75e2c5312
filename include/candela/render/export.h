// Writing an explanation to a folder in formats people already use.
#pragma once

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
