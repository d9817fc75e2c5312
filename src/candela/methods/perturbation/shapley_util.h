// The cooperative game shared by the Shapley-value methods (not public API).
//
// For input x_i, feature groups 0..G-1 (from the request's feature_mask) and a reference:
//   v_i(S) = mean over background rows b of f_t(x_i on the groups in S, b elsewhere)
// (interventional, as shap's KernelExplainer), where the background is the baseline
// distribution's rows, or the single reference of input i for any other baseline.
// v_i(all) = f_t(x_i) and v_i(none) = mean_b f_t(b) are evaluated once; every other
// coalition's rows are made a batch at a time inside the evaluator's stream.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "candela/core/attribution.h"
#include "candela/core/batching.h"
#include "candela/core/explainer.h"
#include "candela/core/target.h"

namespace candela::detail {

class ShapleyGame {
 public:
  // Evaluates f at the inputs (resolving top-1) and v(none). `method` names the method in
  // errors and progress; `check_groups(G)` runs before any model evaluation.
  ShapleyGame(Evaluator& ev, const ExplainRequest& req, uint64_t seed, std::string method,
              const std::function<void(int64_t)>& check_groups = {});

  int64_t inputs() const { return n_; }
  int64_t groups() const { return g_; }
  int64_t background_rows() const { return per_input_ ? 1 : bg_.size(0); }
  const Target& target() const { return target_; }
  double full(int64_t i) const { return full_[i]; }    // v_i(all) = f_t(x_i)
  double empty(int64_t i) const { return empty_[i]; }  // v_i(none)
  // Groups of input i that differ from the reference (some background row) in some element
  // (np.isclose's tolerances, as shap's varying_groups); the others cannot matter.
  std::vector<int64_t> varying(int64_t i) const;

  // Bool masks [end - begin, G] of coalitions begin..end-1 of input i.
  using Masks = std::function<at::Tensor(int64_t input, int64_t begin, int64_t end)>;
  // v_i(S) for counts[i] coalitions of each input i. `cap` limits coalitions per model call
  // (each brings all its background rows); 0 = the evaluator's choice.
  std::vector<std::vector<double>> values(const std::vector<int64_t>& counts, const Masks& masks, int64_t cap);

  // The result: values (each element gets its group's phi), output, targets, and the
  // convergence delta sum_g phi_g - (v(all) - v(none)).
  Attribution finish(const std::vector<std::vector<double>>& phi) const;

 private:
  Evaluator& ev_;
  std::string method_;
  int64_t n_ = 0, d_ = 0, g_ = 0;
  std::vector<int64_t> shape_;  // per-sample input shape
  at::Tensor x_;                // [N, D]
  at::Tensor gid_;              // int64 [N, D], CPU
  at::Tensor bg_;               // [M, D] background rows, or [N, D] one reference per input
  bool per_input_ = false;
  at::Tensor out_x_;
  Target target_;
  std::vector<double> full_, empty_;
};

// Deterministic random numbers for coalition sampling: the same (seed, stream) gives the
// same numbers on every platform (unlike std's distributions).
class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream);
  uint64_t next() { return engine_(); }
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  int64_t below(int64_t n) { return static_cast<int64_t>(engine_() % static_cast<uint64_t>(n)); }

 private:
  std::mt19937_64 engine_;
};

// Sample standard deviation (n - 1) of each column of `rows` [n][G] divided by sqrt(n):
// the standard error of the column means; NaN when n < 2.
std::vector<double> standard_error(const std::vector<std::vector<double>>& rows, int64_t groups);

}  // namespace candela::detail
