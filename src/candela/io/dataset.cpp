#include "candela/io/dataset.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/io/input.h"
#include "candela/io/npy.h"

namespace candela {

Dataset load_dataset(const std::string& path, const std::string& labels, const std::string& masks,
                     const InputSpec& spec, int64_t max_samples) {
  namespace fs = std::filesystem;
  Dataset d;
  CANDELA_CHECK_T(IoError, fs::exists(path), "cannot read '", path, "': no such file or folder. Check the path.");
  if (fs::is_directory(path)) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(path)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp"))
        files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    CANDELA_CHECK(!files.empty(), "the data set is empty: '", path, "' holds no .png, .jpg or .bmp images.");
    std::vector<at::Tensor> batches;
    for (const auto& f : files) {
      batches.push_back(load_input(f, spec).batch);
      d.ids.push_back(fs::path(f).filename().string());
    }
    d.inputs = at::cat(batches);
  } else {
    d.inputs = load_input(path, spec).batch;
  }
  CANDELA_CHECK(d.inputs.size(0) > 0, "the data set is empty: '", path, "' has no rows.");
  if (!labels.empty()) {
    at::Tensor l = read_npy(labels);
    CANDELA_CHECK(!at::isFloatingType(l.scalar_type()) || at::equal(l, l.round()), "'", labels,
                  "' must hold integer class indices.");
    d.labels = l.to(at::kLong).reshape({-1});
  }
  if (!masks.empty()) d.masks = read_npy(masks).ne(0);
  if (max_samples > 0 && max_samples < d.inputs.size(0)) {
    d.inputs = d.inputs.slice(0, 0, max_samples);
    if (d.labels.defined() && d.labels.size(0) > max_samples) d.labels = d.labels.slice(0, 0, max_samples);
    if (d.masks.defined() && d.masks.size(0) > max_samples) d.masks = d.masks.slice(0, 0, max_samples);
    if (!d.ids.empty()) d.ids.resize(max_samples);
  }
  return d;
}

}  // namespace candela
