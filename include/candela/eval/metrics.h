// Metrics of explanation quality: faithfulness, robustness, localisation, randomisation,
// complexity and completeness, with the definitions (and defaults) of Quantus and Captum and
// the papers they cite. This header holds their catalogue and what metrics and evaluation runs
// share; a metric itself is declared with eval/metric.h.
//
// Images (NCHW/NHWC specs) are scored per pixel: attributions are summed over channels into a
// map, and perturbing a pixel perturbs all its channels. Other inputs are scored per element.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "candela/core/catalog.h"
#include "candela/core/explainer.h"
#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/eval/metric.h"

namespace candela {

struct MetricInfo {
  std::string name, family, description, reference;
  nlohmann::json schema;
  bool needs_masks = false, needs_explainer = false;
  std::function<std::unique_ptr<Metric>(const nlohmann::json& options)> create;
};

class MetricRegistry : public Catalog<MetricInfo, Metric> {
 public:
  MetricRegistry() : Catalog("metric", "candela metrics") {}
  static const MetricRegistry& builtin();
  const std::vector<MetricInfo>& metrics() const { return items(); }
  // A metric that states its facts in M::kTraits (eval/metric.h).
  template <class M>
  void add();
  using Catalog::add;
  nlohmann::json to_json() const;
};

template <class M>
void MetricRegistry::add() {
  MetricInfo m = info_of<M>();
  m.needs_masks = M::kTraits.needs_masks;
  m.needs_explainer = M::kTraits.needs_explainer;
  add(std::move(m));
}

// Similarities used by the randomisation metrics (Quantus' definitions): Spearman's rank
// correlation (average ranks for ties) and SSIM (skimage's, 7-wide uniform window, data range
// of both arrays, on the flattened maps as Quantus passes them). a, b: [N, F] -> [N].
at::Tensor spearman_rows(const at::Tensor& a, const at::Tensor& b);
at::Tensor pearson_rows(const at::Tensor& a, const at::Tensor& b);
at::Tensor ssim_rows(const at::Tensor& a, const at::Tensor& b);
// Agreement of two maps on where the evidence is: the intersection over union of the `fraction`
// (in (0, 1]) of features with the largest |value| in each row (at least one feature; ties
// broken by position). a, b: [N, F] -> [N], 1 for the same set, 0 for disjoint sets.
at::Tensor top_fraction_iou_rows(const at::Tensor& a, const at::Tensor& b, double fraction);

// The per-pixel (images) or per-element map of attributions: [N, P], and the pixel grid.
struct FeatureMap {
  at::Tensor values;  // double [N, P]
  bool image = false;
  int64_t height = 0, width = 0, channels = 1;
};
FeatureMap feature_map(const at::Tensor& attributions, const at::Tensor& inputs, const InputSpec& spec);

namespace detail {
// The model's predicted class (argmax) for a stream of inputs made a batch at a time.
at::Tensor predict_rows(const Model& model, const EvalOptions& eval, int64_t total,
                        const std::function<at::Tensor(int64_t, int64_t)>& make, const char* stage);
// One class per sample: int64 [N] -> Target::indices.
Target class_target(const at::Tensor& classes);
}  // namespace detail

}  // namespace candela
