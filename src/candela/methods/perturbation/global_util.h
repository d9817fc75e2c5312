// What the global surrogates (surrogate_tree, rulefit) share: the feature names they print, and
// the model's outputs over every row they fit.
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "candela/core/error.h"
#include "candela/core/batching.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"

namespace candela::detail {

// `given` names, else the model's, else f0, f1, ...; one per feature, or a clear error.
inline std::vector<std::string> global_feature_names(const std::vector<std::string>& given, const Model& model, int64_t per,
                                                     const std::string& method) {
  std::vector<std::string> names = given.empty() ? model.feature_names() : given;
  if (given.empty() && static_cast<int64_t>(names.size()) != per) {
    names.clear();
    for (int64_t j = 0; j < per; ++j) names.push_back(str_cat("f", j));
  }
  CANDELA_CHECK(static_cast<int64_t>(names.size()) == per, method, ": feature_names has ", names.size(),
                " names but each input has ", per, " features; give one name per feature.");
  return names;
}

// The model's outputs over all rows of `x`, in the evaluator's batches; a classifier's [N, classes]
// or a single regression output, else a clear error.
inline at::Tensor global_model_outputs(Evaluator& ev, const at::Tensor& x, const std::string& method) {
  std::vector<at::Tensor> outs;
  ev.forward(method.c_str(), x.size(0),
             [&](int64_t b, int64_t e) {
               return Rows{x.slice(0, b, e), at::arange(b, e, at::TensorOptions().dtype(at::kLong)), {}};
             },
             [&](int64_t, int64_t, const Rows&, const at::Tensor& out) { outs.push_back(out.detach()); });
  at::Tensor out = at::cat(outs);
  CANDELA_CHECK(out.dim() == 1 || out.dim() == 2, method, " explains a classifier's [N, classes] output or a single ",
                "regression output; the model returns shape ", shape_str(out.sizes()), ".");
  return out;
}

}  // namespace candela::detail
