// Known-answer tests for file, .npy and image I/O, colormaps and heatmap rendering.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "candela/core/error.h"
#include "candela/io/file.h"
#include "candela/io/image.h"
#include "candela/io/npy.h"
#include "candela/render/colormap.h"
#include "candela/render/export.h"
#include "candela/render/heatmap.h"

namespace fs = std::filesystem;

namespace {

// A fresh directory per test, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "candela_io_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

void write_raw(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

// Runs `statement`, expecting it to throw `Type` with `word` in its message.
#define EXPECT_THROW_WITH(statement, Type, word)                                  \
  do {                                                                            \
    try {                                                                         \
      statement;                                                                  \
      ADD_FAILURE() << "expected " #Type " containing '" << (word) << "'";        \
    } catch (const Type& e) {                                                     \
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what(); \
    }                                                                             \
  } while (0)

// A version 1.0 .npy file with the given header dict (padded as numpy pads) and data.
std::string npy_file(const std::string& dict, const std::string& data) {
  std::string header = dict;
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + data;
}

std::string npy_f4(const std::string& shape, size_t data_bytes) {
  return npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }", std::string(data_bytes, '\0'));
}

std::vector<uint8_t> rgb_at(const at::Tensor& rgb, int64_t i, int64_t j) {
  auto p = rgb[i][j];
  return {p[0].item<uint8_t>(), p[1].item<uint8_t>(), p[2].item<uint8_t>()};
}
using Rgb = std::vector<uint8_t>;

at::Tensor colour(double v, const std::string& name) {
  return candela::apply_colormap(at::full({1, 1}, v, at::kFloat), name);
}

}  // namespace

// ---- files -----------------------------------------------------------------------------

TEST(WriteFileAtomic, WritesOverwritesAndLeavesNoTemporaryFile) {
  TempDir dir;
  const auto path = dir.file("out.bin");
  const std::string bytes("a\0b\xff", 4);
  candela::write_file_atomic(path, bytes);
  EXPECT_EQ(candela::read_file(path, 100), bytes);
  candela::write_file_atomic(path, "second");
  EXPECT_EQ(candela::read_file(path, 100), "second");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"});
}

TEST(WriteFileAtomic, MissingDirectoryThrowsAndLeavesNothing) {
  TempDir dir;
  const auto path = dir.file("missing/out.bin");
  EXPECT_THROW_WITH(candela::write_file_atomic(path, "x"), candela::IoError, "No such file or directory");
  EXPECT_THROW_WITH(candela::write_file_atomic(path, "x"), candela::IoError, path);
  EXPECT_TRUE(dir.entries().empty());
}

TEST(WriteFileAtomic, FailedRenameRemovesTheTemporaryFile) {
  TempDir dir;
  // Renaming a file over a non-empty directory fails after the temporary file was written.
  fs::create_directories(dir.path / "target" / "inner");
  EXPECT_THROW_WITH(candela::write_file_atomic(dir.file("target"), "payload"), candela::IoError, "target");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"target"});
}

TEST(ReadFile, ReportsMissingDirectoryAndTooLarge) {
  TempDir dir;
  EXPECT_THROW_WITH(candela::read_file(dir.file("nope.npy"), 100), candela::IoError, "no such file");
  EXPECT_THROW_WITH(candela::read_file(dir.path.string(), 100), candela::IoError, "directory");
  write_raw(dir.file("big"), std::string(101, 'x'));
  EXPECT_THROW_WITH(candela::read_file(dir.file("big"), 100), candela::IoError, "limit of 100 bytes");
  EXPECT_EQ(candela::read_file(dir.file("big"), 101).size(), 101u);
}

TEST(ReadFile, ReportsUnreadableFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "root can read any file";
  TempDir dir;
  write_raw(dir.file("secret"), "x");
  ::chmod(dir.file("secret").c_str(), 0);
  EXPECT_THROW_WITH(candela::read_file(dir.file("secret"), 100), candela::IoError, "Permission denied");
}

// ---- npy -------------------------------------------------------------------------------

TEST(Npy, RoundTripsEveryDtypeExactly) {
  const std::vector<at::Tensor> tensors = {
      at::tensor({1.5f, -2.25f, 3.0e38f, 1.0e-40f}).reshape({2, 2}),
      at::tensor({0.1, -1e300, 4.9e-324}, at::kDouble),
      at::tensor({int64_t{-9007199254740993}, int64_t{42}}, at::kLong),
      at::tensor({-2147483647 - 1, 7, 2147483647}, at::kInt),
      at::tensor({0, 128, 255}, at::kByte).reshape({3, 1}),
      at::tensor({1, 0, 1}, at::kByte).to(at::kBool),
      at::tensor({0.5, -65504.0}).to(at::kHalf),
      at::tensor({-128, 127}, at::kChar),
      at::tensor({-32768, 32767}, at::kShort),
  };
  for (const auto& t : tensors) {
    const auto back = candela::parse_npy(candela::npy_bytes(t), "t.npy");
    EXPECT_EQ(back.scalar_type(), t.scalar_type());
    EXPECT_EQ(back.sizes(), t.sizes());
    EXPECT_TRUE(back.equal(t)) << t.scalar_type();
    EXPECT_TRUE(back.is_contiguous());
  }
}

TEST(Npy, MatchesNumpyBytesExactly) {
  // np.save of np.arange(6, dtype='<f4').reshape(2, 3), as numpy 1.24 writes it.
  std::string expected = std::string("\x93NUMPY\x01\x00\x76\x00", 10) +
                         "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" + std::string(58, ' ') + "\n";
  for (float v : {0.f, 1.f, 2.f, 3.f, 4.f, 5.f}) expected.append(reinterpret_cast<const char*>(&v), 4);
  ASSERT_EQ(expected.size(), 152u);
  const auto t = candela::parse_npy(expected, "arange.npy");
  EXPECT_TRUE(t.equal(at::arange(6, at::kFloat).reshape({2, 3})));
  EXPECT_EQ(candela::npy_bytes(t), expected);
}

TEST(Npy, ReadsVersion2ScalarsEmptyArraysAndFortranVectors) {
  std::string header = "{'shape': (), 'fortran_order': False, 'descr': '<f8'}";
  header.append(64 - (12 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string v2 =
      std::string("\x93NUMPY\x02\x00", 8) + static_cast<char>(header.size()) + std::string(3, '\0') + header;
  const double x = -3.5;
  v2.append(reinterpret_cast<const char*>(&x), 8);
  const auto scalar = candela::parse_npy(v2, "v2.npy");
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.item<double>(), -3.5);

  const auto empty = candela::parse_npy(npy_f4("(0, 3)", 0), "empty.npy");
  EXPECT_EQ(empty.sizes(), (std::vector<int64_t>{0, 3}));
  // A 1-D array has the same bytes in both orders.
  const auto vec = candela::parse_npy(
      npy_file("{'descr': '|u1', 'fortran_order': True, 'shape': (3L,), }", "\x01\x02\x03"), "f.npy");
  EXPECT_TRUE(vec.equal(at::tensor({1, 2, 3}, at::kByte)));
  // numpy treats any non-zero byte as true.
  const auto b = candela::parse_npy(
      npy_file("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", std::string("\x02\x00", 2)), "b.npy");
  EXPECT_TRUE(b.equal(at::tensor({1, 0}, at::kByte).to(at::kBool)));
}

TEST(Npy, WritesNonContiguousAndScalarTensorsThroughFiles) {
  TempDir dir;
  const auto t = at::arange(12, at::kLong).reshape({3, 4}).t();
  candela::write_npy(dir.file("t.npy"), t);
  EXPECT_TRUE(candela::read_npy(dir.file("t.npy")).equal(t.contiguous()));
  candela::write_npy(dir.file("s.npy"), at::scalar_tensor(2.5, at::kFloat));
  const auto s = candela::read_npy(dir.file("s.npy"));
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item<float>(), 2.5f);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"s.npy", "t.npy"}));
  EXPECT_THROW_WITH(candela::npy_bytes(at::ones({2}, at::kComplexFloat)), candela::InvalidArgument, "Convert");
  EXPECT_THROW_WITH(candela::read_npy(dir.file("missing.npy")), candela::IoError, "no such file");
}

TEST(Npy, RejectsHostileFilesWithClearMessages) {
  using candela::ParseError;
  auto parse = [](const std::string& bytes) { return candela::parse_npy(bytes, "bad.npy"); };
  const std::string good = npy_f4("(2, 3)", 24);
  ASSERT_NO_THROW(parse(good));

  EXPECT_THROW_WITH(parse("PK\x03\x04 this is a zip"), ParseError, "magic");
  EXPECT_THROW_WITH(parse(good.substr(0, 6)), ParseError, "magic");
  EXPECT_THROW_WITH(parse("\x93NUMPY\x04" + good.substr(7)), ParseError, "version 4.0");
  std::string long_header = good;
  long_header[8] = '\xff';
  long_header[9] = '\x7f';
  EXPECT_THROW_WITH(parse(long_header), ParseError, "beyond the end");
  EXPECT_THROW_WITH(parse(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3}", std::string(24, '\0'))),
                    ParseError, "header is not valid");
  EXPECT_THROW_WITH(parse(npy_file("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", std::string(8, '\0'))),
                    ParseError, "True or False");
  EXPECT_THROW_WITH(parse(npy_file("{'descr': '<f4', 'shape': (2,), }", std::string(8, '\0'))), ParseError, "keys");
  EXPECT_THROW_WITH(parse(npy_file("__import__('os').system('rm -rf /')", "")), ParseError, "header is not valid");
  EXPECT_THROW_WITH(
      parse(npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", std::string(24, '\0'))), ParseError,
      "Fortran order");
  EXPECT_THROW_WITH(parse(npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", std::string(8, '\0'))),
                    ParseError, "big-endian");
  EXPECT_THROW_WITH(parse(npy_file("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", std::string(16, '\0'))),
                    ParseError, "'<c8' is not supported");
  EXPECT_THROW_WITH(parse(npy_file("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", "")),
                    ParseError, "structured");
  EXPECT_THROW_WITH(parse(npy_f4("(-1, 3)", 24)), ParseError, "negative");
  EXPECT_THROW_WITH(parse(npy_f4("(99999999999999999999999,)", 24)), ParseError, "overflow");
  EXPECT_THROW_WITH(parse(npy_f4("(4294967296, 4294967296)", 24)), ParseError, "overflow");
  // Even with a zero dimension, the other dimensions' product must fit (it becomes a stride).
  EXPECT_THROW_WITH(parse(npy_f4("(0, 4294967296, 4294967296)", 0)), ParseError, "overflow");
  // A header that promises a terabyte is refused from the real file size, not allocated.
  EXPECT_THROW_WITH(parse(npy_f4("(1099511627776,)", 24)), ParseError, "truncated");
  EXPECT_THROW_WITH(parse(good.substr(0, good.size() - 4)), ParseError, "needs 24 bytes of data, found 20");
  EXPECT_THROW_WITH(parse(good + "junk"), ParseError, "longer than its header says");
}

// ---- images ----------------------------------------------------------------------------

TEST(Image, WritePngThenLoadImageGivesTheSameValues) {
  TempDir dir;
  const auto rgb = at::arange(4 * 5 * 3, at::kInt).mul(17).remainder(256).to(at::kByte).reshape({4, 5, 3});
  const auto before = rgb.clone();
  candela::write_png(dir.file("rgb.png"), rgb);
  EXPECT_TRUE(rgb.equal(before));  // the caller's tensor is not converted to BGR in place
  EXPECT_EQ(candela::read_file(dir.file("rgb.png"), 1 << 20), candela::encode_png(rgb));
  EXPECT_EQ(candela::encode_png(rgb).substr(1, 3), "PNG");
  const auto loaded = candela::load_image(dir.file("rgb.png"), 3, 4, 5);
  EXPECT_EQ(loaded.sizes(), (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(loaded.scalar_type(), at::kFloat);
  EXPECT_TRUE(loaded.mul(255).round().to(at::kByte).equal(rgb.permute({2, 0, 1})));
  // The red channel is first: pixel (0, 0) is (0, 17, 34).
  EXPECT_FLOAT_EQ(loaded[1][0][0].item<float>(), 17.f / 255);

  const auto gray = at::tensor({0, 1, 254, 255}, at::kByte).reshape({2, 2});
  candela::write_png(dir.file("gray.png"), gray);
  const auto g = candela::load_image(dir.file("gray.png"), 1, 2, 2);
  EXPECT_TRUE(g.mul(255).round().to(at::kByte).equal(gray.unsqueeze(0)));
  // A gray image read as RGB has three equal channels.
  const auto g3 = candela::load_image(dir.file("gray.png"), 3, 2, 2);
  EXPECT_TRUE(g3[0].equal(g[0]) && g3[2].equal(g[0]));
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"gray.png", "rgb.png"}));
}

TEST(Image, ShrinksByAreaAveraging) {
  TempDir dir;
  // 4x4 of 2x2 blocks; each block has values v and v + 2, so its average is v + 1.
  auto img = at::tensor({10, 12, 50, 52, 12, 10, 52, 50, 100, 102, 200, 202, 102, 100, 202, 200}, at::kByte);
  candela::write_png(dir.file("blocks.png"), img.reshape({4, 4}));
  const auto small = candela::load_image(dir.file("blocks.png"), 1, 2, 2);
  EXPECT_TRUE(small.mul(255).round().to(at::kInt).equal(at::tensor({11, 51, 101, 201}, at::kInt).reshape({1, 2, 2})));
  // Enlarging is bilinear: values stay within the source's range and corners keep theirs.
  const auto big = candela::load_image(dir.file("blocks.png"), 1, 8, 8);
  EXPECT_EQ(big.sizes(), (std::vector<int64_t>{1, 8, 8}));
  EXPECT_NEAR(big[0][0][0].item<float>(), 10.f / 255, 1e-6);
}

TEST(Image, ReportsBadFilesAndArguments) {
  TempDir dir;
  write_raw(dir.file("fake.png"), "this is not a png");
  EXPECT_THROW_WITH(candela::load_image(dir.file("fake.png"), 3, 8, 8), candela::ParseError,
                    "not a PNG, JPEG, BMP, TIFF, WebP or PPM/PGM image");
  // A PFM header: OpenCV would decode it from a temporary copy that stays behind on failure.
  write_raw(dir.file("pfm.png"), "PF\n   ");
  EXPECT_THROW_WITH(candela::load_image(dir.file("pfm.png"), 3, 8, 8), candela::ParseError, "PPM/PGM image");
  // A PNG signature followed by garbage gets as far as OpenCV.
  write_raw(dir.file("broken.png"), std::string("\x89PNG\r\n\x1a\n", 8) + "garbage");
  EXPECT_THROW_WITH(candela::load_image(dir.file("broken.png"), 3, 8, 8), candela::ParseError,
                    "not an image OpenCV can decode");
  write_raw(dir.file("empty.png"), "");
  EXPECT_THROW(candela::load_image(dir.file("empty.png"), 3, 8, 8), candela::ParseError);
  EXPECT_THROW_WITH(candela::load_image(dir.file("missing.png"), 3, 8, 8), candela::IoError, "no such file");
  candela::write_png(dir.file("ok.png"), at::zeros({2, 2, 3}, at::kByte));
  EXPECT_THROW_WITH(candela::load_image(dir.file("ok.png"), 2, 8, 8), candela::InvalidArgument, "1 (grayscale) or 3");
  EXPECT_THROW(candela::load_image(dir.file("ok.png"), 3, 0, 8), candela::InvalidArgument);
  EXPECT_THROW_WITH(candela::write_png(dir.file("f.png"), at::zeros({2, 2, 3})), candela::InvalidArgument, "uint8");
  EXPECT_THROW(candela::write_png(dir.file("f.png"), at::zeros({2, 2, 4}, at::kByte)), candela::ShapeMismatch);
  EXPECT_THROW_WITH(candela::write_png(dir.file("no/dir.png"), at::zeros({2, 2}, at::kByte)), candela::IoError,
                    "no/dir.png");
}

TEST(Image, RecognisesImageExtensions) {
  for (const char* p : {"a.png", "dir/b.JPG", "c.jpeg", "d.Bmp", "e.tif", "f.TIFF", "g.webp", "h.ppm", "i.pgm"}) {
    EXPECT_TRUE(candela::is_image_path(p)) << p;
  }
  for (const char* p : {"a.npy", "png", "dir.png/file", "a.png.txt", "", "a."}) {
    EXPECT_FALSE(candela::is_image_path(p)) << p;
  }
}

// ---- colormaps -------------------------------------------------------------------------

TEST(Colormap, BwrEndpointsAndCentre) {
  EXPECT_EQ(rgb_at(colour(0.0, "bwr"), 0, 0), (Rgb{0, 0, 255}));
  EXPECT_EQ(rgb_at(colour(0.5, "bwr"), 0, 0), (Rgb{255, 255, 255}));
  EXPECT_EQ(rgb_at(colour(1.0, "bwr"), 0, 0), (Rgb{255, 0, 0}));
  EXPECT_EQ(rgb_at(colour(0.25, "bwr"), 0, 0), (Rgb{128, 128, 255}));
  // Out-of-range values are clamped.
  EXPECT_EQ(rgb_at(colour(-3.0, "bwr"), 0, 0), (Rgb{0, 0, 255}));
  EXPECT_EQ(rgb_at(colour(7.0, "bwr"), 0, 0), (Rgb{255, 0, 0}));
}

TEST(Colormap, MatchesMatplotlibAtKnownPoints) {
  // matplotlib: inferno(0) = #000004, inferno(1) = #fcffa4, viridis(0) = #440154, viridis(1) = #fde725.
  EXPECT_EQ(rgb_at(colour(0.0, "inferno"), 0, 0), (Rgb{0, 0, 4}));
  EXPECT_EQ(rgb_at(colour(1.0, "inferno"), 0, 0), (Rgb{252, 255, 164}));
  EXPECT_EQ(rgb_at(colour(0.0, "viridis"), 0, 0), (Rgb{68, 1, 84}));
  EXPECT_EQ(rgb_at(colour(1.0, "viridis"), 0, 0), (Rgb{253, 231, 37}));
  EXPECT_EQ(rgb_at(colour(0.0, "jet"), 0, 0), (Rgb{0, 0, 128}));
  EXPECT_EQ(rgb_at(colour(1.0, "jet"), 0, 0), (Rgb{128, 0, 0}));
  EXPECT_EQ(rgb_at(colour(0.5, "coolwarm"), 0, 0), (Rgb{221, 221, 221}));
  EXPECT_EQ(rgb_at(colour(0.0, "coolwarm"), 0, 0), (Rgb{59, 76, 192}));
  EXPECT_EQ(rgb_at(colour(0.5, "gray"), 0, 0), (Rgb{128, 128, 128}));
}

TEST(Colormap, MapsShapesAndRejectsBadInput) {
  const auto out = candela::apply_colormap(at::linspace(0, 1, 6).reshape({2, 3}), "gray");
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 3, 3}));
  EXPECT_EQ(out.scalar_type(), at::kByte);
  EXPECT_EQ(rgb_at(out, 1, 2), (Rgb{255, 255, 255}));
  EXPECT_EQ(candela::colormap_names(),
            (std::vector<std::string>{"bwr", "coolwarm", "gray", "inferno", "jet", "viridis"}));
  EXPECT_THROW_WITH(candela::apply_colormap(out.to(at::kFloat), "viridi"), candela::InvalidArgument,
                    "Did you mean 'viridis'");
  EXPECT_THROW_WITH(candela::apply_colormap(out.to(at::kFloat), "rainbow"), candela::InvalidArgument,
                    "bwr, coolwarm, gray, inferno, jet, viridis");
  EXPECT_THROW_WITH(colour(std::nan(""), "bwr"), candela::InvalidArgument, "NaN");
}

// ---- heatmaps --------------------------------------------------------------------------

TEST(Heatmap, ClipsAtTheCumulativePercentileLikeCaptum) {
  candela::HeatmapOptions opt;
  opt.clip_percentile = 10;
  std::string sign;
  // |a| sorted: 0 1 2 3 4 90, running sums 0 1 3 6 10 100: 10 % of the total is first reached at 4.
  const auto a = at::tensor({0., -1., 2., -3., 4., 90.}).reshape({1, 2, 3});
  const auto m = candela::normalise_map(a, opt, &sign);
  EXPECT_EQ(sign, "signed");
  EXPECT_EQ(m.scalar_type(), at::kFloat);
  EXPECT_TRUE(m.allclose(at::tensor({0.5f, 0.375f, 0.75f, 0.125f, 1.f, 1.f}).reshape({2, 3})));
  // At 99 % the threshold is the largest value: nothing is clipped.
  opt.clip_percentile = 99;
  opt.sign = "absolute";
  EXPECT_TRUE(candela::normalise_map(a, opt).allclose(
      at::tensor({0., 1., 2., 3., 4., 90.}).reshape({2, 3}).div(90).to(at::kFloat)));
}

TEST(Heatmap, ReducesChannelsAndResolvesSigns) {
  candela::HeatmapOptions opt;
  opt.clip_percentile = 100;
  std::string sign;
  // Channels [1, -2] and [3, 2]: summed [4, 0], summed |.| [4, 4].
  const auto a = at::tensor({1., -2., 3., 2.}).reshape({2, 1, 2});
  EXPECT_TRUE(candela::normalise_map(a, opt, &sign).equal(at::tensor({1.f, 0.f}).reshape({1, 2})));
  EXPECT_EQ(sign, "positive");
  opt.sign = "absolute";
  EXPECT_TRUE(candela::normalise_map(a, opt).equal(at::tensor({1.f, 1.f}).reshape({1, 2})));
  opt.sign = "auto";
  const auto neg = at::tensor({-2., 0., -1., 0.}).reshape({2, 2});
  EXPECT_TRUE(candela::normalise_map(neg, opt, &sign).equal(at::tensor({1.f, 0.f, 0.5f, 0.f}).reshape({2, 2})));
  EXPECT_EQ(sign, "negative");
  opt.sign = "positive";
  EXPECT_TRUE(
      candela::normalise_map(at::tensor({-2., 1.}).reshape({1, 2}), opt).equal(at::tensor({0.f, 1.f}).reshape({1, 2})));
}

TEST(Heatmap, AllZeroMapRendersAsTheZeroColour) {
  candela::HeatmapOptions opt;
  opt.min_size = 0;
  opt.sign = "signed";
  const auto zeros = at::zeros({3, 2, 2});
  EXPECT_TRUE(candela::normalise_map(zeros, opt).equal(at::full({2, 2}, 0.5f)));
  const auto white = candela::render_heatmap(zeros, opt);
  EXPECT_TRUE(white.equal(at::full({2, 2, 3}, 255, at::kByte)));
  opt.sign = "auto";  // no sign at all: positive, inferno's black
  EXPECT_EQ(rgb_at(candela::render_heatmap(zeros, opt), 1, 1), (Rgb{0, 0, 4}));
}

TEST(Heatmap, RejectsNaNBadShapesAndBadOptions) {
  candela::HeatmapOptions opt;
  auto a = at::zeros({1, 2, 2});
  a[0][1][1] = std::nan("");
  EXPECT_THROW_WITH(candela::normalise_map(a, opt), candela::InvalidArgument, "NaN");
  EXPECT_THROW_WITH(candela::normalise_map(at::zeros({1, 1, 2, 2}), opt), candela::ShapeMismatch, "attribution[i]");
  auto bad = opt;
  bad.sign = "absolut";
  EXPECT_THROW_WITH(bad.validate(), candela::InvalidArgument, "Did you mean 'absolute'");
  bad = opt;
  bad.clip_percentile = 0;
  EXPECT_THROW_WITH(bad.validate(), candela::InvalidArgument, "clip_percentile");
  bad = opt;
  bad.alpha = 1.5;
  EXPECT_THROW_WITH(bad.validate(), candela::InvalidArgument, "alpha");
  bad = opt;
  bad.colormap = "hot";
  EXPECT_THROW_WITH(bad.validate(), candela::InvalidArgument, "unknown colormap 'hot'");
  bad = opt;
  bad.min_size = -1;
  EXPECT_THROW(bad.validate(), candela::InvalidArgument);
}

TEST(Heatmap, UpscalesSmallMapsByAnIntegerFactor) {
  candela::HeatmapOptions opt;
  opt.min_size = 7;  // longer side 3: factor ceil(7 / 3) = 3
  opt.clip_percentile = 100;
  const auto a = at::tensor({-1., 0., 1., 0., 0., 0.}).reshape({2, 3});
  const auto img = candela::render_heatmap(a, opt);
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{6, 9, 3}));
  for (int64_t i : {0, 1, 2}) {
    EXPECT_EQ(rgb_at(img, i, i), (Rgb{0, 0, 255}));
    EXPECT_EQ(rgb_at(img, i, 6 + i), (Rgb{255, 0, 0}));
    EXPECT_EQ(rgb_at(img, 3 + i, 3 + i), (Rgb{255, 255, 255}));
  }
  opt.min_size = 0;
  EXPECT_EQ(candela::render_heatmap(a, opt).sizes(), (std::vector<int64_t>{2, 3, 3}));
}

TEST(Heatmap, OverlayShowsTheImageWhereAttributionIsZero) {
  candela::HeatmapOptions opt;
  opt.min_size = 0;
  opt.clip_percentile = 100;
  opt.alpha = 0.5;
  const auto a = at::tensor({0., 1., -1., 0.5}).reshape({1, 2, 2});
  const auto image = at::full({1, 2, 2}, 0.25f);  // gray: 63.75 of 255
  const auto out = candela::render_overlay(a, image, opt);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(rgb_at(out, 0, 0), (Rgb{64, 64, 64}));   // zero: the image alone
  EXPECT_EQ(rgb_at(out, 0, 1), (Rgb{159, 32, 32}));  // (0.25 + red) / 2
  EXPECT_EQ(rgb_at(out, 1, 0), (Rgb{32, 32, 159}));  // (0.25 + blue) / 2
  // Half strength: opacity 0.25 over bwr(0.75) = (255, 128, 128).
  EXPECT_EQ(rgb_at(out, 1, 1), (Rgb{112, 80, 80}));
  // Unsigned maps blend uniformly: a zero pixel is still tinted by inferno's (0, 0, 4).
  opt.sign = "absolute";
  EXPECT_EQ(rgb_at(candela::render_overlay(a, image.expand({3, 2, 2}), opt), 0, 0), (Rgb{32, 32, 34}));
  EXPECT_THROW(candela::render_overlay(a, at::zeros({3, 4, 4}), opt), candela::ShapeMismatch);
  EXPECT_THROW_WITH(candela::render_overlay(a, image * 255, opt), candela::InvalidArgument, "[0, 1]");
}

TEST(Renderers, OneArtifactPerFormat) {
  const auto csv = candela::render_csv("r.csv", {{"sample", "value"}, {"a,b", "1"}, {"say \"hi\"", "2"}, {"plain", "3"}});
  EXPECT_EQ(csv.media_type, "text/csv");
  EXPECT_EQ(csv.bytes, "sample,value\n\"a,b\",1\n\"say \"\"hi\"\"\",2\nplain,3\n");
  const auto json = candela::render_json("r.json", {{"a", 1}});
  EXPECT_EQ(json.bytes, "{\n  \"a\": 1\n}\n");
  EXPECT_EQ(json.media_type, "application/json");
  const at::Tensor v = at::arange(6, at::kFloat).reshape({2, 3});
  const auto npy = candela::render_npy("a.npy", v);
  EXPECT_EQ(npy.bytes, candela::npy_bytes(v));
  const at::Tensor map = at::rand({1, 4, 4}), image = at::rand({3, 4, 4});
  EXPECT_EQ(candela::render_png_raw("h.png", map, {}).bytes, candela::encode_png(candela::render_heatmap(map, {})));
  EXPECT_EQ(candela::render_png_overlay("o.png", map, image, {}).bytes, candela::encode_png(candela::render_overlay(map, image, {})));
  EXPECT_EQ(candela::render_markdown("s.md", "| a |\n").media_type, "text/markdown");
}
