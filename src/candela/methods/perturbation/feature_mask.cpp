#include "candela/methods/perturbation/feature_mask.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>
#include <opencv2/ximgproc.hpp>

#include <algorithm>
#include <filesystem>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/io/npy.h"

namespace candela {
using detail::shape_str;

namespace {

constexpr const char* kSpecForms =
    "use 'each', 'grid:CELL', 'slic:REGION_SIZE', 'felzenszwalb:SCALE' or the path of an .npy of integer ids";

// An 8-bit HxWxC copy of a float [C, H, W] image in [0, 1], as OpenCV wants it.
cv::Mat to_mat_u8(const at::Tensor& image, const char* who) {
  CANDELA_CHECK(image.defined() && image.dim() == 3, who, " needs an image [C, H, W], got ",
                image.defined() ? shape_str(image.sizes()) : "nothing", ".");
  const int64_t c = image.size(0), h = image.size(1), w = image.size(2);
  CANDELA_CHECK(c == 1 || c == 3, who, " needs 1 (grey) or 3 (RGB) channels, got ", c, ".");
  CANDELA_CHECK(h >= 1 && w >= 1, who, " needs a non-empty image, got ", shape_str(image.sizes()), ".");
  CANDELA_CHECK(image.is_floating_point(), who, " needs a floating-point image in [0, 1], got ", image.scalar_type(),
                "; divide 8-bit pixels by 255.");
  at::Tensor img = image.detach().to(at::kCPU, at::kFloat);
  CANDELA_CHECK(at::isfinite(img).all().item<bool>(), who, " needs finite pixel values.");
  const double lo = img.min().item<double>(), hi = img.max().item<double>();
  CANDELA_CHECK(lo >= -1e-3 && hi <= 1.0 + 1e-3, who, " needs pixels in [0, 1], got values in [", lo, ", ", hi,
                "]; pass the displayed image, not the normalised model input.");
  at::Tensor u8 = img.clamp(0, 1).mul(255).round().to(at::kByte).permute({1, 2, 0}).contiguous();
  cv::Mat view(static_cast<int>(h), static_cast<int>(w), CV_8UC(static_cast<int>(c)), u8.data_ptr());
  return view.clone();
}

// Labels CV_32SC1 -> int64 [H, W] with ids renumbered 0..G-1 in order of first label value.
at::Tensor renumber(const cv::Mat& labels) {
  CANDELA_CHECK(labels.type() == CV_32SC1 && labels.isContinuous(), "segmenter returned unexpected labels.");
  at::Tensor t = at::from_blob(const_cast<int*>(labels.ptr<int>()), {labels.rows, labels.cols}, at::kInt).to(at::kLong);
  at::Tensor inverse = std::get<1>(at::_unique(t.flatten(), /*sorted=*/true, /*return_inverse=*/true));
  return inverse.view({labels.rows, labels.cols}).contiguous();
}

int64_t parse_int(const std::string& text, const std::string& spec) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  CANDELA_CHECK(used == text.size() && !text.empty() && v >= 1, "feature mask '", spec,
                "' needs a positive integer after ':', got '", text, "'.");
  return v;
}

double parse_number(const std::string& text, const std::string& spec) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  CANDELA_CHECK(used == text.size() && !text.empty() && v > 0 && std::isfinite(v), "feature mask '", spec,
                "' needs a positive number after ':', got '", text, "'.");
  return v;
}

// Images [N, C, H, W] in [0, 1] for the segmenters: `display` when given, else the inputs
// with the spec's normalisation undone.
at::Tensor display_images(const at::Tensor& inputs, const InputSpec& spec, const at::Tensor& display,
                          const std::string& what) {
  const ImageAxes ax = image_axes(inputs, spec);
  const int64_t n = inputs.size(0), h = inputs.size(ax.h), w = inputs.size(ax.w);
  if (display.defined()) {
    at::Tensor d = display.dim() == 3 ? display.unsqueeze(0) : display;
    CANDELA_CHECK(d.dim() == 4 && d.size(0) == n && d.size(2) == h && d.size(3) == w, "feature mask '", what,
                  "' segments the display images, which must be [N, C, H, W] = [", n, ", C, ", h, ", ", w,
                  "] like the inputs ", shape_str(inputs.sizes()), "; got ", shape_str(display.sizes()), ".");
    return d;
  }
  at::Tensor x = inputs.detach().to(at::kCPU, at::kFloat);
  if (ax.c < 0) x = x.unsqueeze(1);
  else if (ax.c == 3) x = x.permute({0, 3, 1, 2});
  const int64_t c = x.size(1);
  if (!spec.std.empty() && !spec.mean.empty()) {
    auto per_channel = [&](const std::vector<double>& v) {
      at::Tensor t = at::tensor(v, at::kDouble).to(at::kFloat);
      CANDELA_CHECK(t.numel() == 1 || t.numel() == c, "the input spec's mean/std has ", t.numel(),
                    " values for ", c, " channels.");
      return t.numel() == 1 ? t.view({1, 1, 1, 1}) : t.view({1, c, 1, 1});
    };
    x = x * per_channel(spec.std) + per_channel(spec.mean);
  }
  const double span = spec.range_max - spec.range_min;
  CANDELA_CHECK(span > 0, "the input spec's range must have min < max.");
  return (x - spec.range_min) / span;  // out of [0, 1] (a wrong spec) is refused by the segmenter
}

}  // namespace

at::Tensor grid_mask(int64_t height, int64_t width, int64_t cell) {
  CANDELA_CHECK(height >= 1 && width >= 1, "grid_mask needs a positive height and width, got ", height, " x ", width,
                ".");
  CANDELA_CHECK(cell >= 1, "grid cell size must be >= 1, got ", cell, ".");
  const auto opts = at::TensorOptions().dtype(at::kLong);
  const int64_t cols = (width + cell - 1) / cell;
  at::Tensor r = at::arange(height, opts).div(cell, "floor"), c = at::arange(width, opts).div(cell, "floor");
  return (r.unsqueeze(1) * cols + c.unsqueeze(0)).contiguous();
}

at::Tensor slic_mask(const at::Tensor& image, int64_t region_size, double ruler, int iterations) {
  CANDELA_CHECK(region_size >= 1, "SLIC region size must be >= 1 pixel, got ", region_size, ".");
  CANDELA_CHECK(ruler >= 0 && std::isfinite(ruler), "SLIC ruler must be >= 0 (0 = SLICO), got ", ruler, ".");
  CANDELA_CHECK(iterations >= 1, "SLIC needs at least 1 iteration, got ", iterations, ".");
  cv::Mat img = to_mat_u8(image, "slic_mask");
  // OpenCV's SLIC places no seed at all when a region is larger than the image, then reads the
  // empty seed list (found by fuzzing): refuse that here.
  CANDELA_CHECK(region_size <= std::min(img.rows, img.cols), "SLIC region size ", region_size,
                " is larger than the image (", img.rows, "x", img.cols, "): use at most ", std::min(img.rows, img.cols),
                " (--features slic:N).");
  if (img.channels() == 3) cv::cvtColor(img, img, cv::COLOR_RGB2Lab);
  cv::Mat labels;
  try {
    auto slic = cv::ximgproc::createSuperpixelSLIC(img, ruler > 0 ? cv::ximgproc::SLIC : cv::ximgproc::SLICO,
                                                   static_cast<int>(region_size), static_cast<float>(ruler));
    slic->iterate(iterations);
    slic->enforceLabelConnectivity(25);
    slic->getLabels(labels);
  } catch (const cv::Exception& e) {
    throw InvalidArgument(detail::str_cat("SLIC failed on an image of shape ", shape_str(image.sizes()),
                                          " with region size ", region_size, ": ", e.what()));
  }
  return renumber(labels);
}

at::Tensor felzenszwalb_mask(const at::Tensor& image, double scale, double sigma, int min_size) {
  CANDELA_CHECK(scale > 0 && std::isfinite(scale), "Felzenszwalb scale must be > 0, got ", scale, ".");
  CANDELA_CHECK(sigma >= 0 && std::isfinite(sigma), "Felzenszwalb sigma must be >= 0, got ", sigma, ".");
  CANDELA_CHECK(min_size >= 1, "Felzenszwalb min_size must be >= 1 pixel, got ", min_size, ".");
  cv::Mat img = to_mat_u8(image, "felzenszwalb_mask");
  cv::Mat labels;
  try {
    auto seg = cv::ximgproc::segmentation::createGraphSegmentation(sigma, static_cast<float>(scale), min_size);
    seg->processImage(img, labels);
  } catch (const cv::Exception& e) {
    throw InvalidArgument(detail::str_cat("Felzenszwalb segmentation failed on an image of shape ",
                                          shape_str(image.sizes()), ": ", e.what()));
  }
  return renumber(labels);
}

ImageAxes image_axes(const at::Tensor& inputs, const InputSpec& spec) {
  const std::string& layout = spec.layout;
  if (layout == "NHWC" && inputs.dim() == 4) return {1, 2, 3};
  if ((layout == "NCHW" || layout.empty()) && inputs.dim() == 4) return {2, 3, 1};
  if (layout.empty() && inputs.dim() == 3) return {1, 2, -1};
  throw InvalidArgument(detail::str_cat(
      "this needs image inputs [N, C, H, W] (NCHW), [N, H, W, C] (NHWC) or [N, H, W]; got inputs of shape ",
      shape_str(inputs.sizes()), layout.empty() ? "" : " with layout " + layout,
      ". For other inputs give a feature mask of ids ('each' or an .npy)."));
}

at::Tensor expand_spatial(const at::Tensor& map, const at::Tensor& inputs, const InputSpec& spec) {
  const ImageAxes ax = image_axes(inputs, spec);
  const int64_t n = inputs.size(0), h = inputs.size(ax.h), w = inputs.size(ax.w);
  at::Tensor m = map.dim() == 2 ? map.unsqueeze(0) : map;
  CANDELA_CHECK(m.dim() == 3 && (m.size(0) == 1 || m.size(0) == n) && m.size(1) == h && m.size(2) == w,
                  "a spatial map must be [H, W] = [", h, ", ", w, "] or [N, H, W] for inputs ",
                  shape_str(inputs.sizes()), "; got ", shape_str(map.sizes()), ".");
  if (ax.c >= 0) m = m.unsqueeze(ax.c);
  return m.expand(inputs.sizes()).contiguous();
}

int64_t feature_count(const at::Tensor& mask) {
  if (!mask.defined() || mask.numel() == 0) return 0;
  return mask.max().item<int64_t>() + 1;
}

at::Tensor expand_feature_mask(const at::Tensor& mask, const at::Tensor& inputs, const InputSpec& spec) {
  CANDELA_CHECK(mask.defined(), "no feature mask given.");
  at::Tensor m = mask.detach().to(at::kCPU);
  if (m.is_floating_point()) {
    CANDELA_CHECK(at::isfinite(m).all().item<bool>() && at::equal(m, m.round()),
                  "feature mask ids must be integers; got non-integral values. Save the mask with "
                  ".astype('int64').");
  } else {
    CANDELA_CHECK(at::isIntegralType(m.scalar_type(), /*includeBool=*/true),
                  "feature mask ids must be integers, got dtype ", m.scalar_type(), ".");
  }
  m = m.to(at::kLong);
  if (m.numel() > 0) {
    const int64_t lo = m.min().item<int64_t>();
    CANDELA_CHECK(lo >= 0, "feature mask ids must be >= 0 (groups numbered 0..G-1); found id ", lo,
                  ". Renumber the groups from 0.");
  }
  const at::IntArrayRef per = inputs.sizes().slice(1);
  const int64_t n = inputs.size(0), d = inputs.dim();
  if (m.sizes() == per) return m.unsqueeze(0).expand(inputs.sizes()).contiguous();
  // [H, W] or [N, H, W] over the channels of an image.
  bool image = false;
  ImageAxes ax;
  try {
    ax = image_axes(inputs, spec);
    image = ax.c >= 0;
  } catch (const InvalidArgument&) {
  }
  if (image) {
    const int64_t h = inputs.size(ax.h), w = inputs.size(ax.w);
    if ((m.dim() == 2 && m.size(0) == h && m.size(1) == w) ||
        (m.dim() == 3 && (m.size(0) == n || m.size(0) == 1) && m.size(1) == h && m.size(2) == w))
      return expand_spatial(m, inputs, spec);
  }
  at::Tensor b = m.dim() == d - 1 ? m.unsqueeze(0) : m;
  bool fits = b.dim() == d;
  for (int64_t i = 0; fits && i < d; ++i) fits = b.size(i) == 1 || b.size(i) == inputs.size(i);
  CANDELA_CHECK(fits, "a feature mask of shape ", shape_str(mask.sizes()),
                  " does not fit inputs of shape ", shape_str(inputs.sizes()), "; give one id per element: shape ",
                  shape_str(per), " (shared by every sample) or ", shape_str(inputs.sizes()),
                  image ? " (or [H, W] / [N, H, W] for all channels of an image)" : "", ".");
  return b.expand(inputs.sizes()).contiguous();
}

at::Tensor make_feature_mask(const std::string& spec, const at::Tensor& inputs, const InputSpec& input_spec,
                             const at::Tensor& display) {
  CANDELA_CHECK(inputs.defined() && inputs.dim() >= 2, "a feature mask needs inputs [N, ...], got ",
                inputs.defined() ? shape_str(inputs.sizes()) : "nothing", ".");
  const auto colon = spec.find(':');
  const std::string kind = spec.substr(0, colon), arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (spec == "each") {
    const at::IntArrayRef per = inputs.sizes().slice(1);
    at::Tensor ids = at::arange(inputs[0].numel(), at::TensorOptions().dtype(at::kLong)).view(per);
    return ids.unsqueeze(0).expand(inputs.sizes()).contiguous();
  }
  if (kind == "grid" && colon != std::string::npos) {
    const int64_t cell = parse_int(arg, spec);
    const ImageAxes ax = image_axes(inputs, input_spec);
    return expand_spatial(grid_mask(inputs.size(ax.h), inputs.size(ax.w), cell), inputs, input_spec);
  }
  if ((kind == "slic" || kind == "felzenszwalb") && colon != std::string::npos) {
    const bool slic = kind == "slic";
    const int64_t region = slic ? parse_int(arg, spec) : 0;
    const double scale = slic ? 0.0 : parse_number(arg, spec);
    at::Tensor images = display_images(inputs, input_spec, display, spec);
    std::vector<at::Tensor> masks;
    for (int64_t i = 0; i < images.size(0); ++i)
      masks.push_back(slic ? slic_mask(images[i], region) : felzenszwalb_mask(images[i], scale));
    return expand_spatial(at::stack(masks), inputs, input_spec);
  }
  CANDELA_CHECK(kind != "grid" && kind != "slic" && kind != "felzenszwalb", "feature mask '", spec,
                "' needs a value after ':', e.g. '", kind, ":16'.");
  std::error_code ec;
  CANDELA_CHECK(!spec.empty() && std::filesystem::is_regular_file(spec, ec), "unknown feature mask '", spec, "': ",
                kSpecForms, ".");
  return expand_feature_mask(read_npy(spec), inputs, input_spec);
}

}  // namespace candela
