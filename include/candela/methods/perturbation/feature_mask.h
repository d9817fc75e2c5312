// Feature groups for perturbation methods: which input elements are removed together.
// A feature mask holds int64 group ids 0..G-1; every element with id g belongs to feature g.
// Image masks are [H, W] (or one per sample, [N, H, W]) and are broadcast over the channels,
// at the channel axis of the input's layout (NCHW or NHWC).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>

namespace candela {

struct InputSpec;

// Ids of cell x cell squares over an H x W image, numbered row-major; the last row and
// column of cells are cut off where `cell` does not divide the side. int64 [H, W].
at::Tensor grid_mask(int64_t height, int64_t width, int64_t cell);

// SLIC superpixels (Achanta et al. 2012) by OpenCV's ximgproc, on `image` float [C, H, W] in
// [0, 1] (C = 1 or 3, RGB). A colour image is segmented in CIE Lab (OpenCV's 8-bit encoding,
// as the paper does), a grey one on its 8-bit intensity. ruler > 0: plain SLIC with that
// compactness (10 is the paper's usual value on 8-bit Lab); ruler = 0: SLICO, which adapts the
// compactness per superpixel. Segments smaller than a quarter of a region are merged into
// a neighbour (OpenCV's enforceLabelConnectivity). Ids renumbered to 0..G-1. int64 [H, W].
at::Tensor slic_mask(const at::Tensor& image, int64_t region_size = 10, double ruler = 10.0, int iterations = 10);

// Felzenszwalb & Huttenlocher (2004) graph segmentation by OpenCV's ximgproc, on the same
// kind of image; `scale` is the algorithm's k on 8-bit RGB differences, `sigma` the Gaussian
// pre-smoothing, `min_size` the smallest segment in pixels. Ids renumbered to 0..G-1.
at::Tensor felzenszwalb_mask(const at::Tensor& image, double scale = 100, double sigma = 0.8, int min_size = 50);

// The feature mask a spec describes, int64 shaped like `inputs` [N, ...] (contiguous):
//   "each"                 every element is its own feature (ids in row-major order, the
//                          same for every sample; Captum's default)
//   "grid:CELL"            cell x cell squares of the image, all channels together
//   "slic:REGION_SIZE"     SLIC superpixels of each sample's `display` image
//   "felzenszwalb:SCALE"   Felzenszwalb segments of each sample's `display` image
//   anything else          a path to an .npy of integer ids, shaped as expand_feature_mask accepts
// `display` is [N, C, H, W] in [0, 1] (what the user sees); when undefined, the segmenters
// undo the input spec's normalisation of `inputs` to get it. Throws InvalidArgument naming
// the problem and the fix.
at::Tensor make_feature_mask(const std::string& spec, const at::Tensor& inputs, const InputSpec& input_spec,
                             const at::Tensor& display = at::Tensor());

// A given mask checked and broadcast to int64 [N, ...] like `inputs`. Accepted shapes: one
// input's [...], the inputs' [N, ...] or [1, ...], any of these with size-1 dimensions that
// broadcast, and for image inputs [H, W] or [N, H, W] (broadcast over channels). Ids must be
// integers >= 0 (integral floating values are accepted); unused ids are allowed, so G is
// max + 1 (an unused id is a feature with no elements, which methods skip).
at::Tensor expand_feature_mask(const at::Tensor& mask, const at::Tensor& inputs, const InputSpec& input_spec);

// G: the number of feature ids, max + 1 (0 for an empty mask).
int64_t feature_count(const at::Tensor& mask);

// (height axis, width axis, channel axis or -1) of image inputs [N, ...] under the spec's
// layout: NCHW (also assumed for unlabelled 4-d inputs), NHWC, or [N, H, W] (no channel axis).
// Throws InvalidArgument for inputs that are not images.
struct ImageAxes {
  int64_t h = 2, w = 3, c = 1;
};
ImageAxes image_axes(const at::Tensor& inputs, const InputSpec& input_spec);

// A spatial map [H, W] or [N, H, W] (any dtype) broadcast to the shape of image `inputs`
// [N, ...], over the channels at the layout's channel axis (contiguous).
at::Tensor expand_spatial(const at::Tensor& map, const at::Tensor& inputs, const InputSpec& input_spec);

}  // namespace candela
