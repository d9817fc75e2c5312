// PyTorch's Adam (Kingma & Ba 2015; torch.optim.Adam without weight decay or amsgrad), written
// out for one tensor: torch/optim would bring torch/nn's headers into a unit for four lines of
// arithmetic. Used by feature visualisation (the image) and `candela refine` (each parameter).
// And Keras' Nadam (Dozat 2016), the optimiser of Xplique's MACO.
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

// keras.optimizers.Nadam (Keras >= 2.11): with u_t = beta1 (1 - 0.5 * 0.96^t) and
// U_t = u_1 ... u_t, m_hat = u_{t+1} m / (1 - U_{t+1}) + (1 - u_t) g / (1 - U_t),
// v_hat = v / (1 - beta2^t), p -= lr * m_hat / (sqrt(v_hat) + eps). (PyTorch's NAdam has
// 0.96^(0.004 t) instead: Keras 2.11 dropped the 0.004 of its older Nadam.)
struct Nadam {
  double lr = 0.001, beta1 = 0.9, beta2 = 0.999, eps = 1e-7;
  at::Tensor m, v;
  int64_t t = 0;
  double u_product = 1.0;
  void step(at::Tensor& p, const at::Tensor& g) {
    at::NoGradGuard no_grad;
    if (!m.defined()) {
      m = at::zeros_like(g);
      v = at::zeros_like(g);
    }
    ++t;
    const double td = static_cast<double>(t);
    const double u_t = beta1 * (1 - 0.5 * std::pow(0.96, td)), u_next = beta1 * (1 - 0.5 * std::pow(0.96, td + 1));
    u_product *= u_t;
    const double u_product_next = u_product * u_next;
    m.mul_(beta1).add_(g, 1 - beta1);
    v.mul_(beta2).addcmul_(g, g, 1 - beta2);
    at::Tensor m_hat = m * (u_next / (1 - u_product_next)) + g * ((1 - u_t) / (1 - u_product));
    at::Tensor denom = (v / (1 - std::pow(beta2, td))).sqrt_().add_(eps);
    p.addcdiv_(m_hat, denom, -lr);
  }
};

}  // namespace candela::detail
