// What each fuzz target does with one input: the bytes go to the real library function, and
// the function either returns or throws. Shared by the libFuzzer harnesses
// (tests/fuzz/<target>_fuzzer.cpp, built by tests/fuzz/run_fuzzer.sh) and by
// tests/unit/test_fuzz_regressions.cpp, which replays tests/fuzz/regressions/<target>/*.
//
// A refusal is an exception: candela::Error is the library's contract; the harnesses also let
// other std::exception through unless CANDELA_FUZZ_STRICT=1 is set (see fuzz_main.h). What the
// fuzzer hunts is crashes, sanitizer reports, leaks, hangs and huge allocations.
//
// With Checks::kStrict each target also checks properties of what it got back (round trips,
// shapes, value ranges) and throws InvariantViolation when one fails: a logic bug even though
// nothing crashed. The regression test uses Checks::kCrashOnly (the contract in the brief).
//
// Must compile as C++17 with clang 14 (the fuzz build) and as C++20 with GCC 12 (the tests).
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "candela/core/baseline.h"
#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/core/registry.h"
#include "candela/core/target.h"
#include "candela/io/csv.h"
#include "candela/io/image.h"
#include "candela/io/npy.h"
#include "candela/methods/perturbation/feature_mask.h"
#include "candela/methods/propagation/rule_graph.h"
#include "candela/detail/sidecar.h"

namespace candela::fuzz {

enum class Checks { kCrashOnly, kStrict };

// A property of a successful parse does not hold (only thrown under Checks::kStrict).
struct InvariantViolation : std::logic_error {
  using std::logic_error::logic_error;
};

#define CANDELA_FUZZ_INVARIANT(cond, ...)                                                             \
  do {                                                                                                \
    if (!(cond))                                                                                      \
      throw ::candela::fuzz::InvariantViolation(                                                      \
          ::candela::detail::str_cat("fuzz invariant failed: " #cond " (", __FILE__, ":", __LINE__, ") ", \
                                     __VA_ARGS__));                                                   \
  } while (0)

inline std::string to_string(const uint8_t* data, size_t size) {
  return size ? std::string(reinterpret_cast<const char*>(data), size) : std::string();
}

// An in-memory file (memfd) for the readers that only take a path: it is reached as
// /proc/self/fd/N, a regular file to stat(), so read_file's checks run as on a real file and
// nothing touches the disk. One per process, rewritten for every input.
class MemFile {
 public:
  static MemFile& instance() {
    static MemFile f;
    return f;
  }
  const std::string& write(const std::string& bytes) {
    if (::ftruncate(fd_, 0) != 0) fail("ftruncate");
    for (size_t done = 0; done < bytes.size();) {
      ssize_t n = ::pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("pwrite");
      done += static_cast<size_t>(n);
    }
    return path_;
  }

 private:
  MemFile() {
    fd_ = ::memfd_create("candela-fuzz", MFD_CLOEXEC);
    if (fd_ < 0) fail("memfd_create");
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  [[noreturn]] static void fail(const char* what) {
    throw std::runtime_error(std::string("fuzz harness: ") + what + " failed: " + std::strerror(errno));
  }
  int fd_ = -1;
  std::string path_;
};

// ---- npy: parse_npy (src/candela/io/npy.cpp) --------------------------------------------------

inline void feed_npy(const uint8_t* data, size_t size, Checks checks = Checks::kCrashOnly) {
  const at::Tensor t = parse_npy(to_string(data, size), "fuzz.npy");
  if (checks != Checks::kStrict) return;
  CANDELA_FUZZ_INVARIANT(t.defined() && t.is_contiguous(), "");
  // What numpy.save would write for this array reads back to the same bytes.
  const std::string saved = npy_bytes(t);
  CANDELA_FUZZ_INVARIANT(npy_bytes(parse_npy(saved, "round-trip.npy")) == saved, "shape ", t.sizes());
}

// ---- csv: parse_csv (src/candela/io/csv.cpp) --------------------------------------------------

inline void feed_csv(const uint8_t* data, size_t size, Checks checks = Checks::kCrashOnly) {
  const Table table = parse_csv(to_string(data, size), "fuzz.csv");
  if (checks != Checks::kStrict) return;
  CANDELA_FUZZ_INVARIANT(table.values.dim() == 2 && table.values.scalar_type() == at::kFloat, "");
  CANDELA_FUZZ_INVARIANT(table.values.size(0) > 0 && table.values.size(1) > 0, "shape ", table.values.sizes());
  CANDELA_FUZZ_INVARIANT(static_cast<int64_t>(table.columns.size()) == table.values.size(1), "");
  CANDELA_FUZZ_INVARIANT(at::isfinite(table.values).all().item<bool>(), "");
}

// ---- image: load_image (src/candela/io/image.cpp, decoding by OpenCV) -------------------------
// load_image takes a path, so the bytes go to a MemFile. The requested channels and size come
// from the input's length (odd: RGB, even: grey; then 28x28, 7x5 or 64x48, which shrinks,
// grows or mixes against the decoded size), so the file itself stays a plain image file.
//
// OpenCV decodes some formats (PFM, Radiance HDR, DICOM, ...) from a temporary copy of the
// bytes (cv::tempfile(), in $OPENCV_TEMP_PATH or /tmp). The harness points OpenCV at a private
// folder and, after every input, removes what is left there and throws LeakFound: a file left
// behind by one load is a leak whatever the outcome (CANDELA_FUZZ_IGNORE_TEMP_LEAK=1: only
// remove, to fuzz past a known one).

// A resource (here: a temporary file) outlived the call: a finding in every mode.
struct LeakFound : std::logic_error {
  using std::logic_error::logic_error;
};

class OpenCvTempDir {
 public:
  static OpenCvTempDir& instance() {
    static OpenCvTempDir d;
    return d;
  }
  // Removes every file OpenCV left in the folder; their names.
  std::vector<std::string> sweep() {
    std::vector<std::string> left;
    if (DIR* dir = ::opendir(path_.c_str())) {
      while (const dirent* e = ::readdir(dir)) {
        const std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        ::unlink((path_ + "/" + name).c_str());
        left.push_back(name);
      }
      ::closedir(dir);
    }
    return left;
  }

 private:
  OpenCvTempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/candela-fuzz-opencv-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("fuzz harness: mkdtemp failed");
    path_ = tmpl;
    ::setenv("OPENCV_TEMP_PATH", path_.c_str(), 1);  // read by cv::tempfile() on every call
  }
  ~OpenCvTempDir() {
    sweep();
    ::rmdir(path_.c_str());
  }
  std::string path_;
};

inline void feed_image(const uint8_t* data, size_t size, Checks checks = Checks::kCrashOnly) {
  static const int64_t kSizes[3][2] = {{28, 28}, {7, 5}, {64, 48}};
  const int64_t channels = size % 2 ? 3 : 1;
  const int64_t h = kSizes[(size / 2) % 3][0], w = kSizes[(size / 2) % 3][1];
  OpenCvTempDir& temp = OpenCvTempDir::instance();
  temp.sweep();
  const std::string& path = MemFile::instance().write(to_string(data, size));
  // The temporary folder is checked however load_image ends, a refusal included.
  at::Tensor img;
  std::exception_ptr refusal;
  try {
    img = load_image(path, channels, h, w);
  } catch (...) {
    refusal = std::current_exception();
  }
  const std::vector<std::string> left = temp.sweep();
  static const bool ignore_leaks = [] {
    const char* v = std::getenv("CANDELA_FUZZ_IGNORE_TEMP_LEAK");
    return v && *v && std::string(v) != "0";
  }();
  if (!left.empty() && !ignore_leaks)
    throw LeakFound(detail::str_cat("load_image left ", left.size(), " temporary file(s) of OpenCV's behind (",
                                    left.front(), ")", refusal ? " while refusing the input" : ""));
  if (refusal) std::rethrow_exception(refusal);
  if (checks != Checks::kStrict) return;
  CANDELA_FUZZ_INVARIANT(img.sizes() == at::IntArrayRef({channels, h, w}), "got ", img.sizes());
  CANDELA_FUZZ_INVARIANT(img.scalar_type() == at::kFloat && img.is_contiguous(), "");
  CANDELA_FUZZ_INVARIANT(at::isfinite(img).all().item<bool>(), "");
  CANDELA_FUZZ_INVARIANT(img.min().item<double>() >= -1e-5 && img.max().item<double>() <= 1 + 1e-5,
                         "values in [", img.min().item<double>(), ", ", img.max().item<double>(), "]");
}

// ---- sidecar: model.json (src/candela/core/model.cpp, detail::parse_sidecar) -------------------

inline void feed_sidecar(const uint8_t* data, size_t size, Checks checks = Checks::kCrashOnly) {
  const detail::Sidecar side = detail::parse_sidecar(to_string(data, size), "fuzz.json");
  const InputSpec& s = side.spec;
  // What the rest of the library asks of a spec read from a sidecar.
  const std::string dumped = s.to_json().dump();
  if (s.is_image()) (void)(s.channels() + s.height() + s.width());
  if (checks != Checks::kStrict) return;
  // A spec that passed validation is written back (to_json) and read again without complaint.
  InputSpec again;
  try {
    again = InputSpec::from_json(nlohmann::json::parse(dumped), "round-trip.json");
  } catch (const std::exception& e) {
    CANDELA_FUZZ_INVARIANT(false, "the spec's own JSON ", dumped, " is refused: ", e.what());
  }
  CANDELA_FUZZ_INVARIANT(again.to_json().dump() == dumped, dumped, " became ", again.to_json().dump());
}

// ---- composite: LRP composite JSON (src/candela/methods/propagation/rule_graph.cpp) ------------------
// As resolve_composite does for a composite file: parse the JSON, then Composite::from_json.

inline void feed_composite(const uint8_t* data, size_t size, Checks checks = Checks::kCrashOnly) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(to_string(data, size));
  } catch (const nlohmann::json::exception& e) {
    throw ParseError(detail::str_cat("fuzz.json: not valid JSON (", e.what(), ")."));
  }
  const LrpRule defaults;
  const Composite c = Composite::from_json(j, defaults, "fuzz.json");
  RuleSettings settings;
  settings.composite = c;
  const std::string key = settings.key();  // the rule-graph cache key: the composite's JSON
  if (checks != Checks::kStrict) return;
  CANDELA_FUZZ_INVARIANT(!c.entries.empty(), "");
  const nlohmann::json written = c.to_json();
  Composite again;
  try {
    again = Composite::from_json(written, defaults, "round-trip.json");
  } catch (const std::exception& e) {
    CANDELA_FUZZ_INVARIANT(false, "the composite's own JSON ", written.dump(), " is refused: ", e.what());
  }
  CANDELA_FUZZ_INVARIANT(again.to_json() == written, written.dump(), " became ", again.to_json().dump());
}

// ---- text_forms: the text of command-line flags (core/target.cpp, baseline.cpp, options.cpp, feature_mask.cpp) --
// The first byte picks the parser, the rest is the text:
//   byte % 4 == 0 ('0', '4', '8', ...)  --baseline     Baseline::parse, then for_inputs on an image
//   byte % 4 == 1 ('1', '5', '9', ...)  --target       Target::parse (classes cat, dog, zebra), then scores
//   byte % 4 == 2 ('2', '6', ':', ...)  --method-option METHOD.KEY=VALUE: parse_option_value on
//                                       METHOD's schema from Registry::builtin(), then the
//                                       method is created with that option, as the CLI does
//   byte % 4 == 3 ('3', '7', ';', ...)  --features     make_feature_mask; (byte / 4) % 3 picks the
//                                       inputs: 0 ('3') NCHW [2, 3, 8, 8], 1 ('7') NHWC [2, 8, 8, 3],
//                                       2 (';') tabular NC [2, 5]
// Baseline::parse, Target::parse and make_feature_mask read .npy files when the text names one.

struct TextFormInputs {
  at::Tensor image_nchw, image_nhwc, tabular, output, rows;
  InputSpec nchw, nhwc, nc;
  static const TextFormInputs& get() {
    static const TextFormInputs in = [] {
      TextFormInputs t;
      auto gen = at::detail::createCPUGenerator(1234);
      t.image_nchw = at::rand({2, 3, 8, 8}, gen, at::TensorOptions().dtype(at::kFloat));
      t.image_nhwc = t.image_nchw.permute({0, 2, 3, 1}).contiguous();
      t.tabular = at::rand({2, 5}, gen, at::TensorOptions().dtype(at::kFloat));
      t.output = at::rand({2, 3}, gen, at::TensorOptions().dtype(at::kFloat));
      t.rows = at::arange(2, at::TensorOptions().dtype(at::kLong));
      t.nchw.shape = {3, 8, 8};
      t.nchw.layout = "NCHW";
      t.nhwc.shape = {8, 8, 3};
      t.nhwc.layout = "NHWC";
      t.nc.shape = {5};
      t.nc.layout = "NC";
      return t;
    }();
    return in;
  }
};

inline void feed_text_forms(const uint8_t* data, size_t size, Checks checks = Checks::kCrashOnly) {
  if (size == 0) return;
  const int which = data[0] % 4;
  const std::string text = to_string(data + 1, size - 1);
  const TextFormInputs& in = TextFormInputs::get();
  switch (which) {
    case 0: {
      const Baseline b = Baseline::parse(text);
      (void)b.describe();
      if (!b.is_distribution()) {
        const at::Tensor ref = b.for_inputs(in.image_nchw, "NCHW", 7);
        if (checks == Checks::kStrict)
          CANDELA_FUZZ_INVARIANT(ref.sizes() == in.image_nchw.sizes(), b.describe(), " gave ", ref.sizes());
      }
      return;
    }
    case 1: {
      static const std::vector<std::string> classes = {"cat", "dog", "zebra"};
      const Target t = Target::parse(text, classes);
      const std::string d = t.describe();
      const at::Tensor s = t.scores(in.output, in.rows);
      if (checks != Checks::kStrict) return;
      CANDELA_FUZZ_INVARIANT(s.dim() == 1 && s.size(0) == 2, d, " gave scores ", s.sizes());
      if (t.kind() == Target::Kind::kIndex || t.kind() == Target::Kind::kIndices || t.kind() == Target::Kind::kTop1)
        CANDELA_FUZZ_INVARIANT(Target::parse(d, classes).describe() == d, "'", d, "' does not read back");
      return;
    }
    case 2: {
      // METHOD.KEY=VALUE, as `candela evaluate --method-option` takes it.
      const size_t dot = text.find('.'), eq = text.find('=');
      if (dot == std::string::npos || eq == std::string::npos || dot > eq) return;
      const std::string method = text.substr(0, dot), key = text.substr(dot + 1, eq - dot - 1);
      const MethodInfo& info = Registry::builtin().get(method);
      const nlohmann::json value = parse_option_value(info.schema, method, key, text.substr(eq + 1));
      nlohmann::json options = nlohmann::json::object();
      options[key] = value;
      const auto explainer = info.create(options);
      if (checks == Checks::kStrict) CANDELA_FUZZ_INVARIANT(explainer != nullptr, method);
      return;
    }
    default: {
      const int form = (data[0] / 4) % 3;
      const at::Tensor& x = form == 0 ? in.image_nchw : form == 1 ? in.image_nhwc : in.tabular;
      const InputSpec& spec = form == 0 ? in.nchw : form == 1 ? in.nhwc : in.nc;
      const at::Tensor mask = make_feature_mask(text, x, spec);
      if (checks != Checks::kStrict) return;
      CANDELA_FUZZ_INVARIANT(mask.sizes() == x.sizes() && mask.scalar_type() == at::kLong, "'", text, "' gave ",
                             mask.sizes());
      CANDELA_FUZZ_INVARIANT(mask.numel() == 0 || mask.min().item<int64_t>() >= 0, "'", text, "'");
      return;
    }
  }
}

// ---- the table both the harnesses and the regression test use ----------------------------------

using FeedFunction = void (*)(const uint8_t*, size_t, Checks);

struct FuzzTarget {
  const char* name;  // tests/fuzz/<name>_fuzzer.cpp, tests/fuzz/regressions/<name>/
  FeedFunction feed;
  bool only_candela_errors;  // false: other std::exception subclasses are refusals too
};

inline const std::vector<FuzzTarget>& fuzz_targets() {
  static const std::vector<FuzzTarget> targets = {
      {"npy", feed_npy, true},
      {"csv", feed_csv, true},
      {"image", feed_image, true},
      {"sidecar", feed_sidecar, true},
      {"composite", feed_composite, true},
      // Flag text also reaches the file readers and LibTorch (std::exception subclasses).
      {"text_forms", feed_text_forms, false},
  };
  return targets;
}

}  // namespace candela::fuzz
