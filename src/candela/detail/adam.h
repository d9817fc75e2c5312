// PyTorch's Adam (Kingma & Ba 2015; torch.optim.Adam without weight decay or amsgrad), written
// out for one tensor: torch/optim would bring torch/nn's headers into a unit for four lines of
// arithmetic. Used by feature visualisation (the image) and `candela refine` (each parameter).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

namespace candela::detail {

struct Adam {
  double lr = 0.001, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  at::Tensor m, v;
  int64_t t = 0;
  // p -= lr * m_hat / (sqrt(v_hat) + eps), in place and without recording autograd history.
  void step(at::Tensor& p, const at::Tensor& g) {
    at::NoGradGuard no_grad;
    if (!m.defined()) {
      m = at::zeros_like(g);
      v = at::zeros_like(g);
    }
    ++t;
    m.mul_(beta1).add_(g, 1 - beta1);
    v.mul_(beta2).addcmul_(g, g, 1 - beta2);
    const double bc1 = 1 - std::pow(beta1, static_cast<double>(t)), bc2 = 1 - std::pow(beta2, static_cast<double>(t));
    at::Tensor denom = (v.sqrt() / std::sqrt(bc2)).add_(eps);
    p.addcdiv_(m, denom, -lr / bc1);
  }
};

}  // namespace candela::detail
