// Evaluation runs: every method x metric over a data set, with per-sample results, a summary
// per method with the mean and a 95% bootstrap interval, and a ranking of the methods per
// metric. A run is resumable: each finished (chunk of samples, method, metric) is appended to
// a journal in the output folder as soon as it is known; started again with the same folder
// and settings, the run skips what the journal holds and loses nothing.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "candela/core/baseline.h"
#include "candela/core/batching.h"
#include "candela/core/model.h"
#include "candela/io/dataset.h"

namespace candela {

using EvaluateData = Dataset;  // io/dataset.h: inputs, labels, masks, ids

struct EvaluateProgress {
  int64_t done = 0, total = 0;  // units of work (chunk x method)
  double elapsed_seconds = 0, remaining_seconds = -1;  // -1: unknown yet
  std::string stage;
};

struct EvaluateConfig {
  std::vector<std::string> methods, metrics;
  std::map<std::string, nlohmann::json> method_options, metric_options;  // by name
  Baseline baseline = Baseline::zeros();
  int64_t chunk = 8;          // samples per unit of work (and per journal entry)
  int64_t bootstrap = 1000;   // resamples for the 95% interval
  int64_t seed = 0;
  EvalOptions eval;           // batch size, memory budget, cancellation
  std::function<void(const EvaluateProgress&)> progress;
  // Called after every explanation the run computes: the method, the samples explained and the
  // seconds it took (`candela recommend` measures each method's cost with it).
  std::function<void(const std::string& method, int64_t samples, double seconds)> timing;
  void validate() const;
};

// Runs (or resumes) the evaluation into `out`: journal.jsonl (progress), then results.csv
// (sample, method, metric, value), results.json (settings, per metric and method: mean, 95%
// interval, n, rank) and summary.md, written atomically at the end. Returns results.json.
nlohmann::json evaluate(const Model& model, const EvaluateData& data, const EvaluateConfig& config,
                        const std::string& out);

// Percentile bootstrap of the mean: {mean, low, high} of the finite values (NaN if none).
std::array<double, 3> bootstrap_mean(const std::vector<double>& values, int64_t resamples, uint64_t seed);

// Shortcut audit (after spectral relevance analysis, Lapuschkin et al. 2019, in its simplest
// form): explains every sample, then looks for a small window of the input that holds a share
// of the relevance far above its share of the area across much of the data set, and clusters
// the normalised maps (k-means) to show which groups of samples rely on it. Returns the
// evidence: the window, its mean relevance share against its area share, the fraction of
// samples where it holds over `factor` times its area share, per-class and per-cluster shares,
// and `suspected` when that fraction is at least `min_fraction`.
struct AuditConfig {
  std::string method = "integrated_gradients";
  nlohmann::json method_options = nlohmann::json::object();
  Baseline baseline = Baseline::zeros();
  double window = 0.125;       // window side as a fraction of the image side
  double factor = 5.0;         // "far above": relevance share >= factor x area share
  double min_fraction = 0.3;   // of the samples
  int64_t clusters = 3;
  int64_t seed = 0;
  // Optional y0,x0,y1,x1 (end-exclusive): also report this window's relevance share and whether
  // it would be flagged (at least min_fraction of the samples over factor x its area share), as
  // "region" (`candela refine` checks that a shortcut it removed is gone).
  std::vector<int64_t> region;
  EvalOptions eval;
};
nlohmann::json audit_shortcuts(const Model& model, const EvaluateData& data, const AuditConfig& config);

}  // namespace candela
