#include "candela/robustness/attacks.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

#include "candela/core/batching.h"
#include "candela/core/model.h"
#include "candela/detail/model_guard.h"
#include "candela/detail/tensor_util.h"

namespace candela {

void AttackOptions::validate() const {
  CANDELA_CHECK(attack == "fgsm" || attack == "pgd" || attack == "pgdl2" || attack == "deepfool",
                "attack must be fgsm, pgd, pgdl2 or deepfool; got '", attack, "'.");
  CANDELA_CHECK(std::isfinite(eps) && std::isfinite(alpha), "eps and alpha must be finite numbers.");
  CANDELA_CHECK(steps != 0, "steps must be >= 1 (or negative for the attack's default), got 0.");
  CANDELA_CHECK(overshoot >= 0 && std::isfinite(overshoot), "overshoot must be >= 0, got ", overshoot, ".");
  CANDELA_CHECK(clamp == "auto" || clamp == "range" || clamp == "none", "clamp must be auto, range or none; got '",
                clamp, "'.");
}

AttackOptions AttackOptions::resolved() const {
  validate();
  AttackOptions o = *this;
  if (o.eps < 0) o.eps = is_l2() ? 1.0 : 8.0 / 255.0;
  if (o.alpha < 0) o.alpha = is_l2() ? 0.2 : 2.0 / 255.0;
  if (o.steps < 0) o.steps = attack == "deepfool" ? 50 : 10;
  return o;
}

PixelSpace PixelSpace::of(const Model& model, const std::string& clamp) {
  const InputSpec& s = model.input_spec();
  PixelSpace p;
  p.clip = clamp == "range" || (clamp == "auto" && s.is_image());
  p.lo = s.range_min;
  p.hi = s.range_max;
  if (s.is_image() && (!s.mean.empty() || !s.std.empty())) {
    const int64_t c = s.channels();
    auto channel = [&](const std::vector<double>& v, double fill) {
      CANDELA_CHECK(v.empty() || v.size() == 1 || static_cast<int64_t>(v.size()) == c, "the input spec's mean/std has ",
                    v.size(), " values for ", c, " channels; give one per channel.");
      std::vector<double> full(c, v.empty() ? fill : v[0]);
      if (static_cast<int64_t>(v.size()) == c) full = v;
      at::Tensor t = at::tensor(full, at::kFloat);
      return s.layout == "NHWC" ? t.view({1, 1, 1, c}) : t.view({1, c, 1, 1});
    };
    p.mean = channel(s.mean, 0.0);
    p.std = channel(s.std, 1.0);
  }
  return p;
}

at::Tensor PixelSpace::to_pixels(const at::Tensor& x) const {
  return mean.defined() ? x * std.to(x.device(), x.scalar_type()) + mean.to(x.device(), x.scalar_type()) : x;
}
at::Tensor PixelSpace::to_model(const at::Tensor& p) const {
  return mean.defined() ? (p - mean.to(p.device(), p.scalar_type())) / std.to(p.device(), p.scalar_type()) : p;
}
at::Tensor PixelSpace::clipped(const at::Tensor& p) const { return clip ? p.clamp(lo, hi) : p; }

namespace {

// Every row's gradient of the cross-entropy at pixel-space points `p`, through the evaluator.
at::Tensor loss_gradient(Evaluator& ev, const PixelSpace& space, const at::Tensor& p, const at::Tensor& labels,
                         const char* stage) {
  const Model& model = ev.model();
  at::Tensor grad = at::empty_like(p);
  Evaluator::Scorer scorer = [&](const at::Tensor& x, const Rows& rows) {
    at::Tensor out = model.forward(space.to_model(x));
    at::Tensor y = labels.index_select(0, rows.sample).to(out.device());
    // Cross-entropy per row, as torch.nn.CrossEntropyLoss computes it (log-softmax, then NLL), over
    // all N rows: its mean over the whole set, as torchattacks on one batch of N. The scale matters
    // only to PGDL2, whose step divides by ||grad|| + 1e-10 (noticeably for confident rows).
    at::Tensor ce = at::nll_loss(at::log_softmax(out, 1), y, {}, at::Reduction::None) / static_cast<double>(p.size(0));
    return std::make_pair(ce, out);
  };
  ev.gradients(
      stage, p.size(0),
      [&](int64_t b, int64_t e) { return Rows{p.slice(0, b, e), at::arange(b, e, at::kLong), {}}; }, scorer,
      [&](int64_t b, int64_t e, const Rows&, const at::Tensor& g, const at::Tensor&) { grad.slice(0, b, e).copy_(g); });
  return grad;
}

at::Tensor flat_norm(const at::Tensor& t) { return t.flatten(1).norm(2, 1); }

at::Tensor pgd(Evaluator& ev, const PixelSpace& space, const at::Tensor& x, const at::Tensor& labels,
               const AttackOptions& o, const at::Tensor& eps, const at::Tensor& alpha) {
  const bool l2 = o.is_l2();
  const at::Tensor e = detail::per_row(eps, x), a = detail::per_row(alpha, x);
  at::Tensor adv = x.clone();
  if (o.random_start && o.attack != "fgsm") {
    at::Generator gen = detail::seeded_generator(static_cast<uint64_t>(o.seed), 0xad7);
    if (!l2) {
      adv = space.clipped(adv + (at::rand(x.sizes(), gen, x.options()) * 2 - 1) * e);
    } else {
      at::Tensor d = at::randn(x.sizes(), gen, x.options());
      at::Tensor r = at::rand({x.size(0)}, gen, x.options());
      d = d * detail::per_row(r / flat_norm(d), d) * e;
      adv = space.clipped(adv + d);
    }
  }
  const int64_t steps = o.attack == "fgsm" ? 1 : o.steps;
  for (int64_t t = 0; t < steps; ++t) {
    at::Tensor g = loss_gradient(ev, space, adv, labels, o.attack == "fgsm" ? "fgsm" : "pgd step");
    if (o.attack == "fgsm") return space.clipped(x + e * g.sign());
    if (!l2) {
      adv = adv + a * g.sign();
      adv = space.clipped(x + at::minimum(at::maximum(adv - x, -e), e));
    } else {
      adv = adv + a * g / detail::per_row(flat_norm(g) + 1e-10, g);
      at::Tensor delta = adv - x;
      at::Tensor factor = at::minimum(eps.to(x.scalar_type()) / flat_norm(delta), at::ones({x.size(0)}, x.options()));
      adv = space.clipped(x + delta * detail::per_row(factor, delta));
    }
  }
  return adv;
}

at::Tensor deepfool(Evaluator& ev, const PixelSpace& space, const at::Tensor& x, const at::Tensor& labels,
                    const AttackOptions& o) {
  const Model& model = ev.model();
  at::Tensor adv = x.clone();
  at::Tensor active = at::ones({x.size(0)}, at::kBool);
  for (int64_t t = 0; t < o.steps && active.any().item<bool>(); ++t) {
    const at::Tensor rows = active.nonzero().squeeze(1);
    ev.batched("deepfool step", rows.size(0), Evaluator::Automatic{true}, [&](int64_t b, int64_t e) {
      const at::Tensor idx = rows.slice(0, b, e);
      at::Tensor p = adv.index_select(0, idx).detach().requires_grad_(true);
      const at::Tensor y = labels.index_select(0, idx);
      at::AutoGradMode grad_mode(true);
      at::Tensor f = model.forward(space.to_model(p));
      const int64_t classes = f.size(1);
      const at::Tensor still = f.argmax(1).eq(y);
      // The Jacobian [B, C, ...]: one backward per class, as torchattacks' _construct_jacobian.
      std::vector<at::Tensor> ws;
      for (int64_t k = 0; k < classes; ++k)
        ws.push_back(torch::autograd::grad({f.select(1, k).sum()}, {p}, {}, /*retain_graph=*/k + 1 < classes,
                                           false, true)[0]);
      at::Tensor w = at::stack(ws, 1).detach();
      f = f.detach();
      const at::Tensor f0 = f.gather(1, y.unsqueeze(1));
      const at::Tensor w0 = w.index({at::arange(idx.size(0)), y});
      const at::Tensor fp = f - f0;                                        // [B, C]
      const at::Tensor wp = w - w0.unsqueeze(1);                           // [B, C, ...]
      at::Tensor wn = wp.flatten(2).norm(2, 2);                            // [B, C]
      at::Tensor value = fp.abs() / wn;
      value.scatter_(1, y.unsqueeze(1), std::numeric_limits<double>::infinity());
      value = value.nan_to_num(std::numeric_limits<double>::infinity());
      const at::Tensor hat = value.argmin(1);
      const at::Tensor ar = at::arange(idx.size(0));
      const at::Tensor w_hat = wp.index({ar, hat});
      const at::Tensor scale = fp.index({ar, hat}).abs() / wn.index({ar, hat}).pow(2);
      at::Tensor delta = (w_hat * detail::per_row(scale, w_hat)).nan_to_num(0, 0, 0);
      at::Tensor next = space.clipped(p.detach() + (1 + o.overshoot) * delta);
      // A row already flipped stops where it is (torchattacks' early stop).
      next = at::where(detail::per_row(still, next), next, p.detach());
      adv.index_copy_(0, idx, next);
      active.index_put_({idx}, still);
    });
  }
  return adv;
}

}  // namespace

at::Tensor adversarial_attack(Evaluator& evaluator, const at::Tensor& inputs, const at::Tensor& labels,
                              const AttackOptions& options, const at::Tensor& eps, const at::Tensor& alpha) {
  const AttackOptions o = options.resolved();
  CANDELA_CHECK(inputs.dim() >= 2, "the attack needs a batch [N, ...] of inputs, got shape ",
                detail::shape_str(inputs.sizes()), ".");
  const int64_t n = inputs.size(0);
  CANDELA_CHECK(labels.dim() == 1 && labels.size(0) == n, "the attack needs one label per input (", n, "), got shape ",
                detail::shape_str(labels.sizes()), ".");
  // Eval mode and weights that require grad (LibTorch's fast input-gradient path), undone on exit.
  detail::ModelGuard guard(evaluator.model());
  const PixelSpace space = PixelSpace::of(evaluator.model(), o.clamp);
  const at::Tensor x = space.to_pixels(inputs.detach().to(at::kFloat));
  const at::Tensor y = labels.to(at::kLong);
  at::Tensor adv;
  if (o.attack == "deepfool") {
    adv = deepfool(evaluator, space, x, y, o);
  } else {
    at::Tensor e = eps.defined() ? eps.to(x.options()) : at::full({n}, o.eps, x.options());
    at::Tensor a = alpha.defined() ? alpha.to(x.options()) : at::full({n}, o.alpha, x.options());
    CANDELA_CHECK(e.numel() == n && (e >= 0).all().item<bool>(), "eps must be >= 0 for every row.");
    adv = pgd(evaluator, space, x, y, o, e, a);
  }
  return space.to_model(adv).detach();
}

}  // namespace candela
