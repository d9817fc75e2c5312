// Anchors (Ribeiro, Singh & Guestrin 2018, "Anchors: High-Precision Model-Agnostic
// Explanations"), as alibi's AnchorTabular and AnchorImage define them (alibi/explainers/anchors:
// anchor_base.AnchorBaseBeam, anchor_tabular.TabularSampler, anchor_image). Definition: an anchor
// A is a conjunction of predicates that holds for x; its precision is P(f(z) = f(x) | z ~ D(.|A)),
// the share of perturbations that keep the anchor and the model's class, and its coverage
// P(A(z)) under the perturbation distribution. The search looks for the anchor with the largest
// coverage whose precision is >= threshold with confidence 1 - delta: a beam search (beam_size
// anchors kept per size, one predicate added per round) whose candidates are compared by the
// KL-LUCB bandit (Kaufmann & Kalyanakrishnan 2013) to within tau, then sampled further until the
// precision's KL lower (or upper) bound clears threshold -/+ epsilon_stop (0.05, alibi's). Without
// an eligible anchor the best candidate by precision is returned (success = false).
//
// - tabular (layout NC, or 2-d inputs): the request's baseline distribution is the training
//   data. Each column is cut at the disc_perc percentiles of the training rows (25, 50, 75:
//   quartiles; np.percentile, np.unique, bin = searchsorted left). The predicates of a column whose
//   instance value lies in bin b are alibi's: "x <= q_k" for k >= b and "x > q_k" for k < b
//   (k over the bin borders); several on one column give an interval. D(.|A): a training row
//   drawn at random whose anchor columns are replaced, jointly, by those of a training row drawn
//   from the rows satisfying A (with replacement). Deviation: alibi first uses every such row
//   once and, when fewer than a batch satisfy A, fills up with rows satisfying parts of A; here
//   rows satisfying all of A are drawn with replacement, and only when none exists is each anchor
//   column drawn from the rows satisfying its own predicates. Coverage: the share of training rows
//   satisfying A. All columns are treated as numerical (alibi's categorical_names are not read).
// - image (NCHW / NHWC): the predicates are the request's feature_mask segments (superpixels),
//   "segment g is shown". D(.|A): each other segment shown with probability 1 - p_sample, a
//   hidden one replaced by alibi's fudged image, its per-channel mean (or hide_color). Coverage:
//   the share of coverage_samples random segment subsets that contain A (about 2^-|A|).
//
// Explains the target's class (default top-1, as alibi explains the prediction): a perturbation
// counts as positive when the model's arg-max is that class. Values: the precision each of the
// anchor's predicates adds, in the order they were added (precision(A_1..A_k) -
// precision(A_1..A_k-1), precision of the empty anchor first), on the predicate's column or
// segment; 0 elsewhere. extra.anchors, per row: rule ("x0 > 0.67 AND x2 <= -0.68"), conditions
// (column, lower, upper; or segments), precision, coverage, success, the partial anchors' precision
// and coverage, model_calls (perturbations the model saw for this row) and, tabular,
// covered_true / covered_false examples (n_covered_ex each, from the last sampling of the anchor).
#pragma once

#include "candela/core/method.h"

#include <vector>

namespace candela {

struct AnchorsOptions {
  std::string mode = "auto";
  double threshold = 0.95;
  double delta = 0.1;
  double tau = 0.15;
  int64_t batch_size = 100;
  int64_t coverage_samples = 10000;
  int64_t beam_size = 1;
  bool stop_on_first = false;
  int64_t max_anchor_size = 0;
  int64_t min_samples_start = 100;
  int64_t n_covered_ex = 10;
  std::vector<double> disc_perc = {25, 50, 75};
  double p_sample = 0.5;
  std::vector<double> hide_color;
  int64_t seed = 0;
  template <class V> void visit(V& v) {
    v("mode", mode, "auto (from the input's layout), tabular or image.", {"auto", "tabular", "image"});
    v("threshold", threshold, "Precision the anchor must reach (with confidence 1 - delta).");
    v("delta", delta, "Significance: 1 - delta is the confidence of the precision bound.");
    v("tau", tau, "KL-LUCB's tolerance when picking the best candidates of a round.");
    v("batch_size", batch_size, "Perturbations drawn per candidate per bandit step.");
    v("coverage_samples", coverage_samples, "Perturbations that estimate coverage (no model calls).");
    v("beam_size", beam_size, "Candidates kept per anchor size.");
    v("stop_on_first", stop_on_first, "Return the first anchor that meets the precision constraint.");
    v("max_anchor_size", max_anchor_size, "Most predicates in an anchor (0: no limit, alibi's None).");
    v("min_samples_start", min_samples_start, "Perturbations that first estimate the empty anchor's precision.");
    v("n_covered_ex", n_covered_ex, "Tabular: examples kept where the anchor holds and the class stays (or not).");
    v("disc_perc", disc_perc, "Tabular: percentiles of the training rows that cut each column into bins.");
    v("p_sample", p_sample, "Image: probability that a segment outside the anchor is hidden.");
    v("hide_color", hide_color,
      "Image: value(s) of a hidden segment, one or one per channel; empty = the segment's per-channel mean.");
    v("seed", seed, "Seed of the perturbations.");
  }
  void validate() const;
};

class Anchors : public Method<Anchors, AnchorsOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "anchors",
      .family = "perturbation",
      .description = "If-then rules (anchors) that keep the model's class with precision >= threshold, found by "
                     "KL-LUCB beam search over quartile predicates (tabular) or superpixels (images).",
      .reference = "Ribeiro, Singh & Guestrin 2018, Anchors: High-Precision Model-Agnostic Explanations",
      .uses_baseline = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

namespace detail {
// alibi's KL bounds of a Bernoulli mean p at level (beta / n), by 16 bisection steps.
double kl_bernoulli(double p, double q);
double kl_upper_bound(double p, double level);
double kl_lower_bound(double p, double level);
}  // namespace detail

}  // namespace candela
