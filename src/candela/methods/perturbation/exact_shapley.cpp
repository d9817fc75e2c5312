#include "candela/methods/perturbation/exact_shapley.h"

#include <cmath>

#include "candela/core/options.h"
#include "shapley_util.h"

namespace candela {

void ExactShapley::Options::validate() const {
  CANDELA_CHECK(perturbations_per_eval >= 0, "perturbations_per_eval must be >= 0 (0 = automatic), got ",
                perturbations_per_eval, ".");
}

Attribution ExactShapley::attribute(Evaluator& ev, const ExplainRequest& req) const {
  detail::ShapleyGame game(ev, req, 0, name(), [](int64_t g) {
    CANDELA_CHECK(g <= kMaxGroups, "exact_shapley evaluates all 2^G coalitions per input; G = ", g,
                  " feature groups is too many (at most ", kMaxGroups,
                  "). Group the features with a feature_mask, or use shapley_value_sampling or kernel_shap.");
  });
  const int64_t n = game.inputs(), g = game.groups();

  // Coalition k is the bit set k + 1 (the empty and the full set are the game's own values).
  const int64_t subsets = int64_t{1} << g;
  const at::Tensor bit = at::arange(g, at::TensorOptions().dtype(at::kLong));
  auto masks = [&](int64_t, int64_t b, int64_t e) {
    const at::Tensor s = at::arange(b + 1, e + 1, at::TensorOptions().dtype(at::kLong)).unsqueeze(1);
    return s.bitwise_right_shift(bit).bitwise_and(1).to(at::kBool);
  };
  const auto v = game.values(std::vector<int64_t>(n, subsets - 2), masks, options_.perturbations_per_eval);

  // w(s) = s! (G - s - 1)! / G! = 1 / (G C(G - 1, s)).
  std::vector<double> w(g);
  for (int64_t s = 0; s < g; ++s) w[s] = std::exp(std::lgamma(s + 1.0) + std::lgamma(g - s + 0.0) - std::lgamma(g + 1.0));
  std::vector<std::vector<double>> phi(n, std::vector<double>(g, 0.0));
  std::vector<double> value(subsets);
  for (int64_t i = 0; i < n; ++i) {
    value[0] = game.empty(i);
    value[subsets - 1] = game.full(i);
    for (int64_t k = 1; k < subsets - 1; ++k) value[k] = v[i][k - 1];
    for (int64_t s = 0; s < subsets; ++s) {
      const double ws = w[std::min<int64_t>(__builtin_popcountll(s), g - 1)];
      for (int64_t j = 0; j < g; ++j)
        if (!(s >> j & 1)) phi[i][j] += ws * (value[s | (int64_t{1} << j)] - value[s]);
    }
  }
  Attribution a = game.finish(phi);
  a.extra["coalitions"] = subsets;
  return a;
}

}  // namespace candela
