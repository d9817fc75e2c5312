// The batching evaluator: every model evaluation of every method goes through it. A method
// describes its work as a stream of rows (made a batch at a time, never all at once); the
// evaluator picks the batch size (by measurement, within a memory budget), reports progress,
// honours cancellation and counts evaluations.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "candela/core/progress.h"

namespace candela {

class Model;
class Target;

struct EvalOptions {
  int64_t max_batch_size = 0;   // rows per model call; 0 = automatic (see measure_batch_size)
  // Budget for one batch's activations (and gradients). 1024 MB: IG on a 224x224 ResNet-50 then
  // runs 5 rows per backward, about as fast as any fixed batch size, at 1.1 GB peak RSS; on a
  // CPU, forward batches much larger than resnet18's 30 rows get slower per sample.
  double max_memory_mb = 1024;
  // Automatic batch sizes by measurement. Before its first forward-only pass and its first
  // gradient pass of more than one row on a TorchScript or ONNX model, the evaluator times the
  // model on zero rows of the input spec's shape at 1, 2, 4, ... rows up to the budget's size
  // (after a warm-up call; the faster of two calls under 0.1 s; until a size is 10% slower per
  // row than the best) and keeps the fastest per row: for the rest of the process (per model,
  // pass, input shape, budget and device), and on disk for a model loaded from a file
  // (batch-sizes.json in $CANDELA_CACHE_DIR, else $XDG_CACHE_HOME/candela or ~/.cache/candela),
  // so that later processes neither pay for the measurement (resnet18 on 2 cores: about 2 s
  // forward-only, 4 s with gradients) nor get different batches. Every stream then uses one
  // size, so a call repeated gives the same bits. On a CPU the fastest batch is far below the
  // budget's (resnet18 224x224, 2 threads: 4 to 8 rows, against 31 forward-only and 15 with
  // gradients). Off, with CANDELA_NO_BATCH_MEASURE=1, for a function model (its calls may have
  // effects) or without a known input shape: the budget's size.
  bool measure_batch_size = true;
  ProgressCallback progress;    // may be empty
  CancelToken cancel;
};

// Rows [begin, end) of a stream: the model inputs and, for each row, the sample it belongs to.
struct Rows {
  at::Tensor inputs;  // [end - begin, ...]
  at::Tensor sample;  // int64 [end - begin]
  at::Tensor aux;     // anything the method wants back in its consumer (e.g. x - baseline)
  // With Evaluator::forward's `references`: the reference each row equals outside a small box
  // (int64 [end - begin], -1: none); undefined: references[sample].
  at::Tensor reference = {};
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
  // The same with the batch size chosen like gradients()'s (with_grad) or forward()'s.
  struct Automatic {
    bool with_grad = false;
    int64_t cap = 0, granule = 1;
  };
  void batched(const char* stage, int64_t total, Automatic batch, const std::function<void(int64_t, int64_t)>& body,
               bool evaluations = true);
  int64_t partial_evaluations() const { return partial_evaluations_; }
  // Forward only, no autograd. With `references` [R, ...], row r equals references[k] outside
  // a box, k = rows.reference[r] (or rows.sample[r]; an occluded window, an ablated feature, a
  // coalition of a few features): the model then re-runs its early layers only around each box
  // (Model::forward_local).
  void forward(const char* stage, int64_t total, const MakeRows& make,
               const OutputConsumer& consume, int64_t cap = 0, const at::Tensor& references = {});

  // Does now what the first passes on the model would: builds its inference graph and measures
  // its batch sizes (forward-only and with gradients), so that no explanation's wall time pays
  // for them. For hosts that keep a model: `evaluate`, the server, the Python package.
  void warm_up();

  int64_t evaluations() const { return evaluations_; }
  // Of those, the rows that re-ran only a crop of the early layers (Model::forward_local).
  int64_t local_evaluations() const { return local_evaluations_; }
  int64_t largest_batch() const { return largest_batch_; }
  // The largest batch the memory budget allows for gradient (or forward-only) passes, or the
  // fixed --batch-size; measured batch sizes never exceed it.
  int64_t batch_size(bool with_grad, int64_t cap = 0) const;
  const Model& model() const { return model_; }
  const EvalOptions& options() const { return options_; }

 private:
  int64_t measured_batch_size(bool with_grad) const;
  int64_t stream_batch(bool with_grad, int64_t cap, int64_t granule, int64_t total) const;
  void check_cancel() const;
  void report(const char* stage, int64_t done, int64_t total) const;

  const Model& model_;
  EvalOptions options_;
  int64_t evaluations_ = 0;
  int64_t partial_evaluations_ = 0;
  int64_t local_evaluations_ = 0;
  int64_t largest_batch_ = 0;
  int64_t bytes_per_row_ = 0;
};

namespace detail {
// The sizes the search tries: 1, 2, 4, ... below `limit`, then `limit`.
std::vector<int64_t> batch_size_candidates(int64_t limit);
// The batch-size search: the candidates in order, each timed by `seconds` (one call of that many
// rows), until one is 10% slower per row than the best so far; the best.
int64_t fastest_batch_size(int64_t limit, const std::function<double(int64_t)>& seconds);
}  // namespace detail

}  // namespace candela
