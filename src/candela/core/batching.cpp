#include "candela/core/batching.h"

#include <torch/csrc/autograd/autograd.h>
#include <ATen/ATen.h>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/core/target.h"

namespace candela {

namespace {
constexpr int64_t kMaxAutoBatch = 4096;
constexpr int64_t kFallbackBytesPerRow = 4 << 20;  // when the model cannot be probed
}  // namespace

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
  int64_t b = batch_size(true, cap);
  if (granule > 1 && b >= granule) b -= b % granule;
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

void Evaluator::forward(const char* stage, int64_t total, const MakeRows& make, const OutputConsumer& consume,
                        int64_t cap) {
  const int64_t b = batch_size(false, cap);
  report(stage, 0, total);
  at::NoGradGuard no_grad;
  for (int64_t begin = 0; begin < total; begin += b) {
    check_cancel();
    const int64_t end = std::min(total, begin + b);
    Rows rows = make(begin, end);
    at::Tensor out = model_.forward_inference(rows.inputs);
    evaluations_ += end - begin;
    largest_batch_ = std::max(largest_batch_, end - begin);
    consume(begin, end, rows, out);
    report(stage, end, total);
  }
}

}  // namespace candela
