#include "common.h"

namespace candela::detail {

Evaluator::MakeRows slice_rows(const at::Tensor& x) {
  return [x](int64_t b, int64_t e) {
    return Rows{x.slice(0, b, e), at::arange(b, e, at::TensorOptions().dtype(at::kLong)), {}};
  };
}

at::Tensor forward_all(Evaluator& ev, const char* stage, const at::Tensor& x) {
  std::vector<at::Tensor> outs;
  ev.forward(stage, x.size(0), slice_rows(x),
             [&](int64_t, int64_t, const Rows&, const at::Tensor& out) { outs.push_back(out); });
  return at::cat(outs);
}

GradientsAt gradients_at(Evaluator& ev, const char* stage, const at::Tensor& x, const Target& target) {
  at::Tensor grads = at::empty_like(x);
  std::vector<at::Tensor> outs;
  ev.gradients(stage, x.size(0), slice_rows(x), target,
               [&](int64_t b, int64_t e, const Rows&, const at::Tensor& g, const at::Tensor& out) {
                 grads.slice(0, b, e).copy_(g);
                 outs.push_back(out);
               });
  return {grads, at::cat(outs)};
}

}  // namespace candela::detail
