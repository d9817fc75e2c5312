// The batching evaluator: every model evaluation of every method goes through it. A method
// describes its work as a stream of rows (made a batch at a time, never all at once); the
// evaluator picks the batch size within a memory budget, reports progress, honours
// cancellation and counts evaluations.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

#include "candela/core/progress.h"

namespace candela {

class Model;
class Target;

struct EvalOptions {
  int64_t max_batch_size = 0;   // rows per model call; 0 = automatic
  // Budget for one batch's activations (and gradients). 1024 MB: IG on a 224x224 ResNet-50 then
  // runs 5 rows per backward, about as fast as any fixed batch size, at 1.1 GB peak RSS; on a
  // CPU, forward batches much larger than resnet18's 30 rows get slower per sample.
  double max_memory_mb = 1024;
  ProgressCallback progress;    // may be empty
  CancelToken cancel;
};

// Rows [begin, end) of a stream: the model inputs and, for each row, the sample it belongs to.
struct Rows {
  at::Tensor inputs;  // [end - begin, ...]
  at::Tensor sample;  // int64 [end - begin]
  at::Tensor aux;     // anything the method wants back in its consumer (e.g. x - baseline)
};

class Evaluator {
 public:
  using MakeRows = std::function<Rows(int64_t begin, int64_t end)>;
  // grads: d target / d inputs for the rows; output: model output for the rows (detached).
  using GradConsumer = std::function<void(int64_t begin, int64_t end, const Rows& rows,
                                          const at::Tensor& grads, const at::Tensor& output)>;
  using OutputConsumer =
      std::function<void(int64_t begin, int64_t end, const Rows& rows, const at::Tensor& output)>;

  // Scores a batch for gradient passes: returns (scores [B], output) for inputs x, which
  // require grad. The default scorer is the model's forward followed by the target.
  using Scorer = std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor& x, const Rows& rows)>;
  static Scorer target_scorer(const Model& model, const Target& target);

  Evaluator(const Model& model, EvalOptions options);
  ~Evaluator();
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;

  // Forward + backward over `total` rows; `target` scores each row (row r explains sample
  // rows.sample[r]). `cap` further limits the batch (a method's internal_batch_size);
  // batches are rounded down to a multiple of `granule` where possible, so a method whose
  // stream is made of equal blocks (IG: one block per path point) gets whole blocks.
  void gradients(const char* stage, int64_t total, const MakeRows& make, const Target& target,
                 const GradConsumer& consume, int64_t cap = 0, int64_t granule = 1);
  // The same with any scorer (a tapped forward pass, a neuron of a layer, ...).
  void gradients(const char* stage, int64_t total, const MakeRows& make, const Scorer& scorer,
                 const GradConsumer& consume, int64_t cap = 0, int64_t granule = 1);
  // Any other batched work (e.g. partial forward passes after a layer): `body(begin, end)`
  // for batches of at most `batch` rows, with progress and cancellation. The rows count as
  // model evaluations when `evaluations` is true, else as partial evaluations.
  void batched(const char* stage, int64_t total, int64_t batch, const std::function<void(int64_t, int64_t)>& body,
               bool evaluations = true);
  int64_t partial_evaluations() const { return partial_evaluations_; }
  // Forward only, no autograd.
  void forward(const char* stage, int64_t total, const MakeRows& make,
               const OutputConsumer& consume, int64_t cap = 0);

  int64_t evaluations() const { return evaluations_; }
  int64_t largest_batch() const { return largest_batch_; }
  // The batch size the evaluator picks for gradient (or forward-only) passes.
  int64_t batch_size(bool with_grad, int64_t cap = 0) const;
  const Model& model() const { return model_; }
  const EvalOptions& options() const { return options_; }

 private:
  void check_cancel() const;
  void report(const char* stage, int64_t done, int64_t total) const;

  const Model& model_;
  EvalOptions options_;
  int64_t evaluations_ = 0;
  int64_t partial_evaluations_ = 0;
  int64_t largest_batch_ = 0;
  int64_t bytes_per_row_ = 0;
};

}  // namespace candela
