#include "candela/methods/gradient/input_x_gradient.h"

#include "candela/core/options.h"
#include "common.h"

namespace candela {

Attribution InputXGradient::attribute(Evaluator& ev, const ExplainRequest& req) const {
  auto [grads, output] = detail::gradients_at(ev, "input_x_gradient", req.inputs, req.target);
  Attribution a;
  a.values = grads * req.inputs;
  a.output = output;
  a.targets = req.target.classes(output);
  return a;
}

}  // namespace candela
