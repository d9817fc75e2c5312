#include "candela/methods/gradient/saliency.h"

#include "candela/core/options.h"
#include "common.h"

namespace candela {

Attribution Saliency::attribute(Evaluator& ev, const ExplainRequest& req) const {
  auto [grads, output] = detail::gradients_at(ev, "saliency", req.inputs, req.target);
  Attribution a;
  a.values = options_.abs ? grads.abs() : grads;
  a.output = output;
  a.targets = req.target.classes(output);
  return a;
}

}  // namespace candela
