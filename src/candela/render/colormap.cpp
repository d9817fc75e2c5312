#include "candela/render/colormap.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>

#include "candela/core/error.h"

namespace candela {
namespace {

using Rgb = std::array<double, 3>;
// One channel as matplotlib's segment data: (x, y) breakpoints, linear in between.
using Curve = std::vector<std::pair<double, double>>;

// Resolution of the lookup table: even, so that 0.5 falls exactly on an entry (white for bwr).
constexpr int64_t kSteps = 1024;

// Moreland, "Diverging Color Maps for Scientific Visualization" (2009), CoolWarmFloat33: the
// same 33 evenly spaced colours matplotlib's coolwarm interpolates.
constexpr Rgb kCoolwarm[] = {
    {0.2298, 0.2987, 0.7537}, {0.2662, 0.3531, 0.8015}, {0.3039, 0.4065, 0.8450}, {0.3428, 0.4588, 0.8837},
    {0.3830, 0.5094, 0.9174}, {0.4244, 0.5581, 0.9456}, {0.4667, 0.6046, 0.9682}, {0.5096, 0.6483, 0.9848},
    {0.5530, 0.6889, 0.9954}, {0.5963, 0.7261, 0.9998}, {0.6392, 0.7596, 0.9982}, {0.6813, 0.7890, 0.9904},
    {0.7222, 0.8140, 0.9766}, {0.7615, 0.8343, 0.9569}, {0.7987, 0.8498, 0.9317}, {0.8335, 0.8602, 0.9011},
    {0.8654, 0.8654, 0.8654}, {0.8978, 0.8489, 0.8209}, {0.9241, 0.8274, 0.7745}, {0.9445, 0.8009, 0.7267},
    {0.9589, 0.7698, 0.6780}, {0.9673, 0.7341, 0.6288}, {0.9700, 0.6943, 0.5794}, {0.9668, 0.6504, 0.5303},
    {0.9580, 0.6028, 0.4818}, {0.9437, 0.5518, 0.4342}, {0.9239, 0.4973, 0.3880}, {0.8990, 0.4396, 0.3432},
    {0.8692, 0.3783, 0.3003}, {0.8346, 0.3129, 0.2593}, {0.7956, 0.2413, 0.2205}, {0.7525, 0.1572, 0.1841},
    {0.7057, 0.0156, 0.1502},
};

// Evenly spaced colours as three curves.
std::array<Curve, 3> from_list(const std::vector<Rgb>& colours) {
  std::array<Curve, 3> curves;
  for (size_t i = 0; i < colours.size(); ++i) {
    for (int c = 0; c < 3; ++c) curves[c].emplace_back(double(i) / double(colours.size() - 1), colours[i][c]);
  }
  return curves;
}

// OpenCV's 256-entry tables for inferno and viridis are matplotlib's, in BGR order.
std::array<Curve, 3> from_opencv(int colormap) {
  cv::Mat ramp(1, 256, CV_8UC1), bgr;
  for (int i = 0; i < 256; ++i) ramp.at<uchar>(i) = static_cast<uchar>(i);
  cv::applyColorMap(ramp, bgr, colormap);
  std::vector<Rgb> colours;
  for (int i = 0; i < 256; ++i) {
    auto p = bgr.at<cv::Vec3b>(i);
    colours.push_back({p[2] / 255.0, p[1] / 255.0, p[0] / 255.0});
  }
  return from_list(colours);
}

std::array<Curve, 3> curves_of(const std::string& name) {
  check_colormap_name(name);
  if (name == "bwr") return from_list({{0, 0, 1}, {1, 1, 1}, {1, 0, 0}});
  if (name == "coolwarm") return from_list({std::begin(kCoolwarm), std::end(kCoolwarm)});
  if (name == "gray") return from_list({{0, 0, 0}, {1, 1, 1}});
  if (name == "inferno") return from_opencv(cv::COLORMAP_INFERNO);
  if (name == "viridis") return from_opencv(cv::COLORMAP_VIRIDIS);
  // "jet": matplotlib's _jet_data (OpenCV's jet differs slightly).
  return {Curve{{0, 0}, {0.35, 0}, {0.66, 1}, {0.89, 1}, {1, 0.5}},
          Curve{{0, 0}, {0.125, 0}, {0.375, 1}, {0.64, 1}, {0.91, 0}, {1, 0}},
          Curve{{0, 0.5}, {0.11, 1}, {0.34, 1}, {0.65, 0}, {1, 0}}};
}

double eval(const Curve& curve, double x) {
  auto hi = std::lower_bound(curve.begin(), curve.end(), x,
                             [](const std::pair<double, double>& p, double v) { return p.first < v; });
  if (hi == curve.begin()) return curve.front().second;
  if (hi == curve.end()) return curve.back().second;
  auto lo = hi - 1;
  return lo->second + (hi->second - lo->second) * (x - lo->first) / (hi->first - lo->first);
}

// uint8 [kSteps + 1, 3]: entry i is the colour of i / kSteps.
at::Tensor lookup_table(const std::string& name) {
  const auto curves = curves_of(name);
  auto table = at::empty({kSteps + 1, 3}, at::kByte);
  auto* p = table.data_ptr<uint8_t>();
  for (int64_t i = 0; i <= kSteps; ++i) {
    for (int c = 0; c < 3; ++c) {
      p[i * 3 + c] =
          static_cast<uint8_t>(std::lround(255.0 * std::clamp(eval(curves[c], double(i) / kSteps), 0.0, 1.0)));
    }
  }
  return table;
}

}  // namespace

std::vector<std::string> colormap_names() { return {"bwr", "coolwarm", "gray", "inferno", "jet", "viridis"}; }

void check_colormap_name(const std::string& name) {
  const auto names = colormap_names();
  if (std::find(names.begin(), names.end(), name) != names.end()) return;
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  throw InvalidArgument(
      detail::str_cat("unknown colormap '", name, "'.", did_you_mean(name, names), " Valid colormaps: ", list, "."));
}

at::Tensor apply_colormap(const at::Tensor& values01, const std::string& name) {
  const auto table = lookup_table(name);
  CANDELA_CHECK(
      values01.defined() && at::isFloatingType(values01.scalar_type()),
      "apply_colormap needs a floating-point tensor of values in [0, 1]. Convert it with .to(torch::kFloat).");
  auto v = values01.detach().cpu().to(at::kDouble);
  CANDELA_CHECK(!v.isnan().any().item<bool>(), "cannot colour a map that contains NaN values. ",
                "Check the attribution for NaN (e.g. from a division by zero in the model).");
  auto index = v.clamp(0, 1).mul(kSteps).round().to(at::kLong);
  auto sizes = values01.sizes().vec();
  sizes.push_back(3);
  return table.index_select(0, index.reshape({-1})).view(sizes);
}

}  // namespace candela
