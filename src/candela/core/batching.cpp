#include "candela/core/batching.h"
#include "candela/core/memory.h"

#include <torch/csrc/autograd/autograd.h>
#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <torch/version.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/target.h"
#include "candela/detail/tensor_util.h"

namespace candela {

namespace fs = std::filesystem;
using detail::str_cat;

namespace {
constexpr int64_t kMaxAutoBatch = 4096;
constexpr int64_t kFallbackBytesPerRow = 4 << 20;  // when the model cannot be probed
// A size this much slower per row than the best so far ends the measurement: per-row time
// falls while a batch fills the cores and rises once it spills out of the caches.
constexpr double kPastTheBest = 1.10;
constexpr double kTimeTwiceBelow = 0.1;  // seconds

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// ---- measured batch sizes, kept on disk ----------------------------------------------------
// One JSON object {key: rows} in $CANDELA_CACHE_DIR (else $XDG_CACHE_HOME/candela, else
// ~/.cache/candela)/batch-sizes.json, for models loaded from a file; the key names the file
// (path, size, modification time), the pass, the per-sample shape, the budget's size, the device
// and LibTorch's version.
fs::path cache_file() {
  if (const char* d = std::getenv("CANDELA_CACHE_DIR"); d && *d) return fs::path(d) / "batch-sizes.json";
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return fs::path(d) / "candela" / "batch-sizes.json";
  if (const char* d = std::getenv("HOME"); d && *d) return fs::path(d) / ".cache" / "candela" / "batch-sizes.json";
  return {};
}

std::mutex disk_mutex;

nlohmann::json read_cache(const fs::path& file) {
  std::ifstream in(file);
  if (!in) return nlohmann::json::object();
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();  // a damaged cache is measured again
}

int64_t cached_on_disk(const std::string& key) {
  const fs::path file = cache_file();
  if (key.empty() || file.empty()) return 0;
  std::lock_guard<std::mutex> lock(disk_mutex);
  const nlohmann::json j = read_cache(file);
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

// Best effort: a cache that cannot be written only costs the next process a measurement. The
// file is replaced atomically, so a reader never sees half of it.
void store_on_disk(const std::string& key, int64_t rows) {
  const fs::path file = cache_file();
  if (key.empty() || file.empty()) return;
  std::lock_guard<std::mutex> lock(disk_mutex);
  try {
    fs::create_directories(file.parent_path());
    nlohmann::json j = read_cache(file);
    j[key] = rows;
    const fs::path tmp = file.string() + ".tmp" + std::to_string(::getpid());
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << j.dump(1) << "\n";
      if (!out) return;
    }
    fs::rename(tmp, file);
  } catch (const std::exception&) {
  }
}

// Runs the model once on `b` zero rows of its input spec's shape, with or without a backward.
void run_on_zeros(const Model& model, bool with_grad, int64_t b) {
  // Rows of the first parameter's floating type (a float64 ONNX graph wants doubles), else float.
  at::TensorOptions opts = at::TensorOptions().device(c10::Device(model.device()));
  const auto params = model.module()->parameters();
  if (params.begin() != params.end() && (*params.begin()).is_floating_point())
    opts = opts.dtype((*params.begin()).scalar_type());
  std::vector<int64_t> shape = {b};
  const auto& per_sample = model.input_spec().shape;
  shape.insert(shape.end(), per_sample.begin(), per_sample.end());
  const at::Tensor x = at::zeros(shape, opts);
  if (with_grad) {
    at::AutoGradMode enable(true);
    at::Tensor xg = x.detach().requires_grad_(true);
    torch::autograd::grad({model.forward(xg).sum()}, {xg}, {}, false, false, /*allow_unused=*/true);
  } else {
    at::NoGradGuard no_grad;
    model.forward_inference(x);
  }
}

}  // namespace

namespace detail {
std::vector<int64_t> batch_size_candidates(int64_t limit) {
  std::vector<int64_t> sizes;
  for (int64_t p = 1; p < limit; p *= 2) sizes.push_back(p);
  sizes.push_back(std::max<int64_t>(1, limit));
  return sizes;
}

int64_t fastest_batch_size(int64_t limit, const std::function<double(int64_t)>& seconds) {
  int64_t best = 0;
  double best_per_row = 0;
  for (int64_t b : batch_size_candidates(limit)) {
    const double per_row = seconds(b) / static_cast<double>(b);
    if (best == 0 || per_row < best_per_row) {
      best = b;
      best_per_row = per_row;
    } else if (per_row > kPastTheBest * best_per_row) {
      break;
    }
  }
  return best;
}
}  // namespace detail

namespace {

std::atomic<bool> g_reusing_memory{false};

#if defined(__GLIBC__)
// LibTorch's own CPU allocator takes every tensor from posix_memalign. glibc carves an aligned
// block out of a larger free one and frees the trimmed tail separately, into a per-thread cache
// where it never merges back: the freed block is then a few bytes too small for the next request
// of the same size, and every batch's tensors came from fresh pages even with mmap off (measured:
// 16384 new page faults for each 64 MiB tensor made and dropped in a loop). This allocator asks
// malloc for 64 bytes more and aligns inside the block, keeping malloc's own pointer just before
// the data: a freed block is a whole malloc chunk, and the next request of its size reuses it.
// (No const on allocate(): the const one overrides LibTorch 1.x's pure virtual, the other 2.x's.)
struct ReusingCpuAllocator final : c10::Allocator {
  static constexpr size_t kAlignment = 64;  // c10's gAlignment: what vectorised kernels expect
  static void release(void* data) {
    if (data) std::free(static_cast<void**>(data)[-1]);
  }
  c10::DataPtr make(size_t nbytes) const {
    if (nbytes == 0) return {nullptr, nullptr, &release, c10::Device(c10::kCPU)};
    void* raw = std::malloc(nbytes + kAlignment);  // at least 16-byte aligned: room for the pointer
    TORCH_CHECK(raw, "not enough memory: you tried to allocate ", nbytes, " bytes.");
    const auto aligned = (reinterpret_cast<uintptr_t>(raw) + kAlignment) & ~uintptr_t{kAlignment - 1};
    void* data = reinterpret_cast<void*>(aligned);
    static_cast<void**>(data)[-1] = raw;
    return {data, data, &release, c10::Device(c10::kCPU)};
  }
  c10::DataPtr allocate(size_t nbytes) const { return make(nbytes); }
  c10::DataPtr allocate(size_t nbytes) { return make(nbytes); }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
};
#endif

}  // namespace

bool reuse_freed_memory() {
#if defined(__GLIBC__)
  static std::mutex once;
  std::lock_guard<std::mutex> lock(once);
  if (g_reusing_memory) return true;
  if (std::getenv("CANDELA_NO_MEMORY_REUSE")) return false;
  for (const char* v : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_"})
    if (std::getenv(v)) return false;  // the user tuned malloc: theirs
  // No block from mmap (each would be fresh pages), and no trimming of the heap's top.
  if (mallopt(M_MMAP_MAX, 0) != 1 || mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) != 1)
    return false;  // (ASan's malloc refuses both)
  static auto* allocator = new ReusingCpuAllocator;  // never destroyed: tensors may outlive main()
  c10::SetCPUAllocator(allocator, /*priority=*/1);
  g_reusing_memory = true;
  return true;
#else
  return false;
#endif
}

bool reusing_freed_memory() { return g_reusing_memory; }

void release_freed_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

Evaluator::Evaluator(const Model& model, EvalOptions options) : model_(model), options_(std::move(options)) {
  CANDELA_CHECK(options_.max_batch_size >= 0, "--batch-size (max_batch_size) must be >= 0 (0 = automatic), got ",
                options_.max_batch_size, ".");
  CANDELA_CHECK(options_.max_memory_mb > 0, "--max-memory must be positive (MB), got ", options_.max_memory_mb, ".");
  if (options_.max_batch_size == 0) bytes_per_row_ = model_.activation_bytes_per_sample();
  if (bytes_per_row_ <= 0) bytes_per_row_ = kFallbackBytesPerRow;
}

Evaluator::~Evaluator() = default;

int64_t Evaluator::batch_size(bool with_grad, int64_t cap) const {
  int64_t b = options_.max_batch_size;
  if (b == 0) {
    // A backward keeps every activation of the forward (bytes_per_row_ counts each storage
    // once), while its gradients live only from one layer to the next; a forward without
    // autograd frees each activation once it is used. Measured on ResNet-50 at 224x224 (192 MB
    // of activations per row): peak RSS grows by about 135 MB per row of a backward
    // (bench/bench_memory), so the budget is an upper bound on a batch's memory.
    double per_row = with_grad ? 1.0 * bytes_per_row_ : 0.5 * bytes_per_row_;
    b = static_cast<int64_t>(options_.max_memory_mb * 1024.0 * 1024.0 / per_row);
    b = std::clamp<int64_t>(b, 1, kMaxAutoBatch);
  }
  if (cap > 0) b = std::min(b, cap);
  return b;
}

int64_t Evaluator::measured_batch_size(bool with_grad) const {
  const int64_t limit = batch_size(with_grad);
  const auto& spec = model_.input_spec();
  if (options_.max_batch_size > 0 || !options_.measure_batch_size || limit <= 1 || spec.shape.empty() ||
      !model_.module() || std::getenv("CANDELA_NO_BATCH_MEASURE"))
    return limit;
  // (Not keyed by the thread count: a process that changes it mid-way, as the tests comparing one
  // and two threads do, keeps its batches and so its rounding.)
  const std::string what = str_cat(with_grad ? "forward+backward" : "forward", " shape ",
                                   detail::shape_str(spec.shape), " limit ", limit, " ", model_.device(),
                                   " libtorch ", TORCH_VERSION,
                                   reusing_freed_memory() ? " reusing memory" : "");
  auto slot = std::static_pointer_cast<int64_t>(model_.cached("batch-size " + what, [&]() -> std::shared_ptr<void> {
    std::string key;
    std::error_code ec;
    if (!model_.source().empty() && fs::is_regular_file(model_.source(), ec)) {
      const fs::path file = fs::absolute(model_.source(), ec);
      key = str_cat(file.string(), " size ", fs::file_size(file, ec), " mtime ",
                    fs::last_write_time(file, ec).time_since_epoch().count(), " ", what);
    }
    int64_t rows = cached_on_disk(key);
    if (rows <= 0 || rows > limit) {
      const char* stage = with_grad ? "measuring batch sizes (gradients)" : "measuring batch sizes";
      const auto sizes = static_cast<int64_t>(detail::batch_size_candidates(limit).size());
      int64_t tried = 0;
      try {
        rows = detail::fastest_batch_size(limit, [&](int64_t b) {
          report(stage, tried++, sizes);
          run_on_zeros(model_, with_grad, b);  // builds the executor's plan for this shape
          // A short call is noisy on a busy machine: the faster of two; a long one is timed once.
          auto start = Clock::now();
          run_on_zeros(model_, with_grad, b);
          double seconds = since(start);
          if (seconds < kTimeTwiceBelow) {
            start = Clock::now();
            run_on_zeros(model_, with_grad, b);
            seconds = std::min(seconds, since(start));
          }
          return seconds;
        });
      } catch (const std::exception&) {
        rows = 0;  // a model that refuses zeros of its spec's shape: the budget's size
      }
      if (rows > 0) store_on_disk(key, rows);
    }
    return std::make_shared<int64_t>(rows > 0 ? rows : limit);
  }));
  return *slot;
}

int64_t Evaluator::stream_batch(bool with_grad, int64_t cap, int64_t granule, int64_t total) const {
  if (total <= 1) return 1;  // nothing to choose: no measurement
  int64_t b = measured_batch_size(with_grad);
  if (cap > 0) b = std::min(b, cap);
  if (granule > 1 && b >= granule) b -= b % granule;
  return b;
}

void Evaluator::warm_up() {
  if (!model_.module() || model_.input_spec().shape.empty()) return;
  try {
    run_on_zeros(model_, false, 1);  // the inference graph, built and checked
  } catch (const std::exception&) {
    return;  // a model that refuses zeros: the first real pass says why
  }
  measured_batch_size(false);
  measured_batch_size(true);
}

void Evaluator::check_cancel() const {
  if (options_.cancel.cancelled()) throw Cancelled("the explanation was cancelled.");
}

void Evaluator::report(const char* stage, int64_t done, int64_t total) const {
  if (options_.progress) options_.progress(Progress{stage, done, total});
}

Evaluator::Scorer Evaluator::target_scorer(const Model& model, const Target& target) {
  return [&model, &target](const at::Tensor& x, const Rows& rows) {
    at::Tensor out = model.forward(x);
    return std::make_pair(target.scores(out, rows.sample), out);
  };
}

void Evaluator::gradients(const char* stage, int64_t total, const MakeRows& make, const Target& target,
                          const GradConsumer& consume, int64_t cap, int64_t granule) {
  gradients(stage, total, make, target_scorer(model_, target), consume, cap, granule);
}

void Evaluator::gradients(const char* stage, int64_t total, const MakeRows& make, const Scorer& scorer,
                          const GradConsumer& consume, int64_t cap, int64_t granule) {
  const int64_t b = stream_batch(true, cap, granule, total);
  report(stage, 0, total);
  for (int64_t begin = 0; begin < total; begin += b) {
    check_cancel();
    const int64_t end = std::min(total, begin + b);
    Rows rows = make(begin, end);
    at::Tensor x = rows.inputs.detach().requires_grad_(true);
    at::Tensor out, grad;
    {
      at::AutoGradMode enable(true);
      auto [scores, output] = scorer(x, rows);
      out = output;
      auto grads = torch::autograd::grad({scores.sum()}, {x}, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                         /*create_graph=*/false, /*allow_unused=*/true);
      grad = grads[0].defined() ? grads[0] : at::zeros_like(x);  // output independent of the input
    }
    evaluations_ += end - begin;
    largest_batch_ = std::max(largest_batch_, end - begin);
    consume(begin, end, rows, grad, out.detach());
    report(stage, end, total);
  }
}

void Evaluator::batched(const char* stage, int64_t total, int64_t batch,
                        const std::function<void(int64_t, int64_t)>& body, bool evaluations) {
  CANDELA_ASSERT(batch >= 1, "a method asked for batches of ", batch, " rows.");
  report(stage, 0, total);
  for (int64_t begin = 0; begin < total; begin += batch) {
    check_cancel();
    const int64_t end = std::min(total, begin + batch);
    body(begin, end);
    (evaluations ? evaluations_ : partial_evaluations_) += end - begin;
    largest_batch_ = std::max(largest_batch_, end - begin);
    report(stage, end, total);
  }
}

void Evaluator::batched(const char* stage, int64_t total, Automatic batch,
                        const std::function<void(int64_t, int64_t)>& body, bool evaluations) {
  batched(stage, total, stream_batch(batch.with_grad, batch.cap, batch.granule, total), body, evaluations);
}

void Evaluator::forward(const char* stage, int64_t total, const MakeRows& make, const OutputConsumer& consume,
                        int64_t cap, const at::Tensor& references) {
  const int64_t b = stream_batch(false, cap, 1, total);
  report(stage, 0, total);
  at::NoGradGuard no_grad;
  for (int64_t begin = 0; begin < total; begin += b) {
    check_cancel();
    const int64_t end = std::min(total, begin + b);
    Rows rows = make(begin, end);
    bool local = false;
    at::Tensor out = references.defined()
                         ? model_.forward_local(rows.inputs, references,
                                                rows.reference.defined() ? rows.reference : rows.sample, &local)
                         : model_.forward_inference(rows.inputs);
    if (local) local_evaluations_ += end - begin;
    evaluations_ += end - begin;
    largest_batch_ = std::max(largest_batch_, end - begin);
    consume(begin, end, rows, out);
    report(stage, end, total);
  }
}

}  // namespace candela
