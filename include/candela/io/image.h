// Image files in and out (decoding and encoding by OpenCV).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace candela {

// Loads an image file (PNG, JPEG, BMP, TIFF, WebP, PPM/PGM, ...) as float32
// [channels, height, width] in [0, 1] (8-bit values / 255, 16-bit values / 65535).
// channels: 1 = grayscale, 3 = RGB (not OpenCV's BGR); an alpha channel is dropped and JPEG
// EXIF orientation is applied. The image is resized only when its size differs: area
// interpolation when both sides shrink (averages, no aliasing), bilinear otherwise.
// Throws IoError (unreadable file), ParseError (not a decodable image) or InvalidArgument.
at::Tensor load_image(const std::string& path, int64_t channels, int64_t height, int64_t width);

// Whether the file name has an image extension (png jpg jpeg bmp tif tiff webp ppm pgm), any case.
bool is_image_path(const std::string& path);

// The PNG file bytes of uint8 [H, W, 3] RGB or [H, W] grayscale (lets callers render several
// files in memory before writing any). Throws InvalidArgument / ShapeMismatch for other input.
std::string encode_png(const at::Tensor& rgb_hwc_u8);

// encode_png written with write_file_atomic.
void write_png(const std::string& path, const at::Tensor& rgb_hwc_u8);

}  // namespace candela
