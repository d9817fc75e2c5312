// Progress and cancellation for long explanations. Both are plain values owned by the
// caller (no globals), so a server can run several explanations at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace candela {

struct Progress {
  std::string stage;   // e.g. "integrated_gradients"
  int64_t done = 0;    // model evaluations finished in this stage
  int64_t total = 0;   // model evaluations planned in this stage (0 = unknown)
};

using ProgressCallback = std::function<void(const Progress&)>;

// Set it from any thread; the evaluator checks it between batches and throws candela::Cancelled.
class CancelToken {
 public:
  void cancel() { flag_->store(true); }
  bool cancelled() const { return flag_->load(); }

 private:
  std::shared_ptr<std::atomic<bool>> flag_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace candela
