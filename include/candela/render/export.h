// Writing an explanation to a folder in formats people already use.
#pragma once

#include <string>
#include <vector>

#include "candela/core/attribution.h"
#include "candela/core/model.h"
#include "candela/io/input.h"
#include "candela/render/heatmap.h"

namespace candela {

// Writes attributions.npy, attribution.json and, for image inputs, heatmap.png (overlay)
// and heatmap_raw.png (heatmap_<i>.png / heatmap_raw_<i>.png for several samples).
// All files are rendered in memory first, then each is written atomically; on an error
// nothing new is left in `out_dir`. Returns the paths written.
std::vector<std::string> write_explanation(const std::string& out_dir, const Attribution& attribution,
                                           const Model& model, const LoadedInput& input,
                                           const HeatmapOptions& heatmap);

}  // namespace candela
