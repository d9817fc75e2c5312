#include "candela/io/image.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <limits>

#include "candela/core/error.h"
#include "candela/io/file.h"

namespace candela {
namespace {
// Beyond any real image file, and within the int-sized length cv::imdecode's buffer takes.
constexpr size_t kMaxImageFileBytes = size_t{1} << 30;

// PNG, JPEG, BMP, TIFF, WebP and PPM/PGM/PBM, by their first bytes. OpenCV's other decoders
// (PFM, Radiance HDR, DICOM, ...) copy the bytes into a temporary file that stays behind when
// decoding fails (found by fuzzing), and no model input needs them.
bool known_image_format(const std::string& b) {
  auto starts = [&](const char* magic, size_t n) { return b.size() >= n && std::memcmp(b.data(), magic, n) == 0; };
  return starts("\x89PNG\r\n\x1a\n", 8) || starts("\xff\xd8\xff", 3) || starts("BM", 2) || starts("II*\0", 4) ||
         starts("MM\0*", 4) || (starts("RIFF", 4) && b.size() >= 12 && b.compare(8, 4, "WEBP") == 0) ||
         (b.size() >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6');
}
}  // namespace

at::Tensor load_image(const std::string& path, int64_t channels, int64_t height, int64_t width) {
  CANDELA_CHECK(channels == 1 || channels == 3, "cannot load '", path, "' with ", channels,
                " channels: use 1 (grayscale) or 3 (RGB).");
  CANDELA_CHECK(
      height > 0 && width > 0 && height <= std::numeric_limits<int>::max() && width <= std::numeric_limits<int>::max(),
      "cannot load '", path, "' at size ", height, "x", width, ": height and width must be positive.");
  // Decoding from memory keeps read_file's checks and messages (missing file, directory, size).
  const std::string bytes = read_file(path, kMaxImageFileBytes);
  if (!known_image_format(bytes))
    throw ParseError(detail::str_cat("cannot read '", path, "': it is not a PNG, JPEG, BMP, TIFF, WebP or PPM/PGM ",
                                     "image (judged by its first bytes). Check the file or convert it to PNG."));
  const int flags = cv::IMREAD_ANYDEPTH | (channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
  cv::Mat img;
  try {
    img = cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data())), flags);
  } catch (const cv::Exception&) {
    img.release();  // a corrupt file can make a decoder throw; report it like any undecodable file
  }
  if (img.empty()) {
    throw ParseError(detail::str_cat("cannot read '", path, "': it is not an image OpenCV can decode ",
                                     "(PNG, JPEG, BMP, TIFF, WebP, PPM, ...). Check the file or convert it to PNG."));
  }
  double scale = 1.0;
  switch (img.depth()) {
    case CV_8U:
      scale = 1.0 / 255;
      break;
    case CV_16U:
      scale = 1.0 / 65535;
      break;
    default:
      throw ParseError(detail::str_cat("cannot read '", path, "': its pixels are neither 8-bit nor 16-bit ",
                                       "unsigned integers. Convert it to an 8-bit PNG."));
  }
  // Convert to float before resizing so interpolation does not round to the source's levels.
  cv::Mat f;
  img.convertTo(f, CV_32F, scale);
  if (f.rows != height || f.cols != width) {
    const bool shrink = height <= f.rows && width <= f.cols;
    cv::Mat resized;
    cv::resize(f, resized, cv::Size(static_cast<int>(width), static_cast<int>(height)), 0, 0,
               shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
    f = resized;
  }
  if (channels == 3) cv::cvtColor(f, f, cv::COLOR_BGR2RGB);
  if (!f.isContinuous()) f = f.clone();
  // from_blob borrows the Mat's memory, so copy out with clone: contiguous() would return the
  // borrowed view itself when C = 1, since [1, H, W] already counts as contiguous.
  return at::from_blob(f.data, {height, width, channels}, at::kFloat)
      .permute({2, 0, 1})
      .clone(at::MemoryFormat::Contiguous);
}

bool is_image_path(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const auto dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return false;
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  constexpr std::array<const char*, 9> kExtensions = {"png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "ppm", "pgm"};
  return std::find(kExtensions.begin(), kExtensions.end(), ext) != kExtensions.end();
}

std::string encode_png(const at::Tensor& image) {
  CANDELA_CHECK(image.defined() && image.scalar_type() == at::kByte, "cannot encode a PNG: the image must be a ",
                "uint8 tensor", image.defined() ? detail::str_cat(", not ", image.scalar_type()) : std::string(),
                ". Scale to [0, 255] and convert with .to(torch::kUInt8).");
  const bool rgb = image.dim() == 3 && image.size(2) == 3;
  CANDELA_CHECK_T(ShapeMismatch, (rgb || image.dim() == 2) && image.numel() > 0, "cannot encode a PNG of shape ",
                  image.sizes(), ": expected [H, W, 3] (RGB) or [H, W] (grayscale).");
  at::Tensor t = image.detach().cpu().contiguous();
  // `t` may share memory with the caller's tensor: convert into a new Mat, never in place.
  cv::Mat mat(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), rgb ? CV_8UC3 : CV_8UC1, t.data_ptr());
  cv::Mat bgr;
  if (rgb) cv::cvtColor(mat, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> encoded;
  bool ok = false;
  try {
    ok = cv::imencode(".png", rgb ? bgr : mat, encoded);
  } catch (const cv::Exception& e) {
    throw IoError(detail::str_cat("PNG encoding failed: ", e.what()));
  }
  CANDELA_CHECK_T(IoError, ok, "PNG encoding failed (OpenCV built without PNG support?).");
  return std::string(encoded.begin(), encoded.end());
}

void write_png(const std::string& path, const at::Tensor& image) { write_file_atomic(path, encode_png(image)); }

}  // namespace candela
