#include "candela/io/input.h"

#include <ATen/ATen.h>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"
#include "candela/io/csv.h"
#include "candela/io/image.h"
#include "candela/io/npy.h"

namespace candela {
using detail::shape_str;

namespace {
// [C] broadcastable against an NCHW batch.
at::Tensor channel_vector(const std::vector<double>& v, int64_t channels, double fill) {
  std::vector<double> full(channels, fill);
  for (int64_t c = 0; c < channels; ++c)
    if (!v.empty()) full[c] = v.size() == 1 ? v[0] : v[c];
  return at::tensor(full, at::kDouble).to(at::kFloat).view({1, channels, 1, 1});
}
}  // namespace

LoadedInput load_input(const std::string& path, const InputSpec& spec) {
  LoadedInput in;
  if (is_image_path(path)) {
    CANDELA_CHECK(spec.is_image(), "'", path, "' is an image but the model's input is not described as one; "
                  "give --input-shape C,H,W and --layout NCHW (or NHWC), or add \"input\" to the model's .json.");
    at::Tensor img = load_image(path, spec.channels(), spec.height(), spec.width()).unsqueeze(0);  // [1,C,H,W]
    in.display = img;
    at::Tensor x = img * (spec.range_max - spec.range_min) + spec.range_min;
    x = (x - channel_vector(spec.mean, spec.channels(), 0.0)) / channel_vector(spec.std, spec.channels(), 1.0);
    in.batch = spec.layout == "NHWC" ? x.permute({0, 2, 3, 1}).contiguous() : x.contiguous();
    return in;
  }
  auto ends_with = [&](const char* ext) {
    std::string e = ext;
    return path.size() > e.size() && path.substr(path.size() - e.size()) == e;
  };
  at::Tensor x;
  if (ends_with(".csv")) {
    Table table = read_csv(path);
    CANDELA_CHECK_T(ShapeMismatch, spec.shape.empty() || (spec.shape.size() == 1 && spec.shape[0] == table.values.size(1)),
                    "'", path, "' has ", table.values.size(1), " columns but the model expects inputs of shape ",
                    shape_str(spec.shape), ". Drop or add columns (a header row names them).");
    in.batch = table.values.contiguous();
    in.feature_names = table.columns;
    return in;
  }
  CANDELA_CHECK(ends_with(".npy"), "cannot read input '", path,
                "': use an image (PNG, JPEG, ...), a NumPy .npy file or a numeric .csv of rows.");
  x = read_npy(path);
  CANDELA_CHECK(x.is_floating_point() || x.scalar_type() == at::kLong || x.scalar_type() == at::kInt ||
                    x.scalar_type() == at::kByte,
                "'", path, "' holds ", x.scalar_type(), " values; save the input as float32.");
  x = x.to(at::kFloat);
  const auto& shape = spec.shape;
  if (!shape.empty() && x.sizes() == at::IntArrayRef(shape)) x = x.unsqueeze(0);  // one sample
  if (shape.empty() && x.dim() == 1) x = x.unsqueeze(0);
  CANDELA_CHECK_T(ShapeMismatch, shape.empty() || x.sizes().slice(1) == at::IntArrayRef(shape), "'", path,
                  "' has shape ", shape_str(x.sizes()), " but the model expects [N, ", shape_str(shape).substr(1),
                  " or one sample ", shape_str(shape), ". Reshape the array, or fix --input-shape.");
  in.batch = x.contiguous();
  if (spec.is_image()) in.display = to_display(in.batch, spec);
  return in;
}

std::string infer_layout(InputSpec& spec, const at::Tensor& batch) {
  if (!spec.layout.empty() || batch.dim() != 4 || !batch.is_floating_point()) return "";
  const int64_t a = batch.size(1), b = batch.size(2), c = batch.size(3);
  auto colours = [](int64_t v) { return v == 1 || v == 3 || v == 4; };
  std::string layout;
  if (colours(a) && a < b && a < c) layout = "NCHW";
  else if (colours(c) && c < a && c < b) layout = "NHWC";
  if (layout.empty()) return "";
  if (!spec.shape.empty() && spec.shape != std::vector<int64_t>{a, b, c}) return "";
  spec.shape = {a, b, c};
  spec.layout = layout;
  return "inferred input layout " + layout + " from the data's shape " + shape_str(batch.sizes()) +
         "; give --layout NCHW or --layout NHWC if that is wrong.";
}

at::Tensor to_display(const at::Tensor& batch, const InputSpec& spec) {
  CANDELA_CHECK(spec.is_image(), "to_display needs an image input spec.");
  at::Tensor x = spec.layout == "NHWC" ? batch.permute({0, 3, 1, 2}) : batch;
  x = x.detach().to(at::kCPU, at::kFloat);
  x = x * channel_vector(spec.std, spec.channels(), 1.0) + channel_vector(spec.mean, spec.channels(), 0.0);
  x = (x - spec.range_min) / (spec.range_max - spec.range_min);
  return x.clamp(0.0, 1.0).contiguous();
}

}  // namespace candela
