#include "rule_ops.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "candela/core/error.h"

namespace candela::detail {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor opt(const c10::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

// zennit's stabilizer: z + eps * sign(z), zero counted as positive. (copysign differs only at
// z = -0.0, a neuron whose inputs are all zero, where the relevance it passes on is 0 anyway.)
at::Tensor stab(const at::Tensor& z, double eps) {
  return z + at::copysign(at::scalar_tensor(eps, z.options()), z);
}

at::Tensor act_forward(const at::Tensor& x, int64_t kind, const std::vector<double>& p) {
  switch (kind) {
    case kRelu: return at::relu(x);
    case kLeakyRelu: return at::leaky_relu(x, p.at(0));
    case kElu: return at::elu(x, p.at(0), p.at(1), p.at(2));
    case kSigmoid: return at::sigmoid(x);
    case kTanh: return at::tanh(x);
    case kSoftplus: return at::softplus(x, p.at(0), p.at(1));
    case kGelu: return at::gelu(x, p.at(0) != 0 ? "tanh" : "none");
    case kSilu: return at::silu(x);
    case kHardtanh: return at::hardtanh(x, p.at(0), p.at(1));
    default: throw InvalidArgument(str_cat("internal: unknown activation kind ", kind, "."));
  }
}

// g * f'(x), by autograd on a recomputation (exact for every kind, one code path).
at::Tensor local_grad(const at::Tensor& x, int64_t kind, const std::vector<double>& p, const at::Tensor& g) {
  if (kind == kRelu) return g * (x > 0).to(g.scalar_type());
  at::AutoGradMode on(true);
  at::Tensor xx = x.detach().requires_grad_(true);
  at::Tensor y = act_forward(xx, kind, p);
  return torch::autograd::grad({y}, {xx}, {g})[0];
}

// A DeepLIFT batch [inputs; references] as [2, n, ...], and the difference of its halves as
// [1, n, ...] (a - b, which broadcasts over both halves).
at::Tensor halves(const at::Tensor& t) {
  std::vector<int64_t> shape = {2, t.size(0) / 2};
  shape.insert(shape.end(), t.sizes().begin() + 1, t.sizes().end());
  return t.reshape(shape);
}
at::Tensor paired(const at::Tensor& t) {
  const int64_t n = t.size(0) / 2;
  return (t.slice(0, 0, n) - t.slice(0, n, 2 * n)).unsqueeze(0);
}

void check_pairs(const at::Tensor& x) {
  CANDELA_CHECK(x.dim() >= 1 && x.size(0) % 2 == 0,
                "internal: a DeepLIFT pass needs a batch of [inputs; references], got ", x.size(0), " rows.");
}

class ActFn : public torch::autograd::Function<ActFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t kind, std::vector<double> p,
                            int64_t mode, double eps) {
    at::Tensor y = act_forward(x, kind, p);
    if (mode == kRescale) check_pairs(x);
    ctx->save_for_backward({x, y});
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["p"] = p;
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["eps"] = eps;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &y = saved[1], &g = grads[0];
    const int64_t kind = ctx->saved_data["kind"].toInt(), mode = ctx->saved_data["mode"].toInt();
    const auto p = ctx->saved_data["p"].toDoubleVector();
    at::Tensor gi;
    if (mode == kGuided) {
      gi = local_grad(x, kind, p, g).clamp_min(0);  // Captum: relu(grad_input)
    } else if (mode == kDeconv) {
      gi = g.clamp_min(0);  // relu(grad_output), no forward mask
    } else {
      // DeepLIFT Rescale (Captum's nonlinear rule): g * dy / dx, the gradient where |dx| < eps.
      // dx and dy are the same for both halves: computed once and broadcast over [2, n, ...].
      const double eps = ctx->saved_data["eps"].toDouble();
      const at::Tensor dx = paired(x), dy = paired(y);
      const at::Tensor small = dx.abs() < eps;
      const at::Tensor rescaled = halves(g) * dy / dx.masked_fill(small, 1);
      gi = at::where(small, halves(local_grad(x, kind, p, g)), rescaled).reshape(x.sizes());
    }
    return {gi, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Scatter-add of pooled values back to the input positions they came from.
at::Tensor unpool(const at::Tensor& values, const at::Tensor& indices, at::IntArrayRef sizes) {
  at::Tensor flat = at::zeros({sizes[0], sizes[1], c10::multiply_integers(sizes.begin() + 2, sizes.end())},
                              values.options());
  flat.scatter_add_(2, indices.flatten(2), values.flatten(2));
  return flat.view(sizes);
}

class MaxPoolFn : public torch::autograd::Function<MaxPoolFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, std::vector<int64_t> kernel,
                            std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                            bool ceil_mode, double eps) {
    check_pairs(x);
    CANDELA_CHECK_T(UnsupportedModel, x.dim() == 4, "DeepLIFT's max-pool rule handles 2-d pooling of [N, C, H, W], got ",
                    x.dim(), " dimensions.");
    auto [out, idx] = at::max_pool2d_with_indices(x, kernel, stride, padding, dilation, ceil_mode);
    ctx->save_for_backward({x, out, idx});  // the backward routes through the same argmax
    ctx->saved_data["eps"] = eps;
    return out;
  }
  // Captum's maxpool rule: the pooled difference between input and reference, routed to the
  // input's and the reference's argmax, divided by the input difference.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &out = saved[1], &idx = saved[2], &g = grads[0];
    const int64_t n = x.size(0) / 2;
    const at::Tensor o = out.slice(0, 0, n), o_ref = out.slice(0, n, 2 * n);
    const at::Tensor xmax = at::max(o, o_ref);
    // One scatter for the three maps: the input's share, the reference's, and the plain gradient.
    const at::Tensor g_in = g.slice(0, 0, n);
    const at::Tensor shares = at::cat({g_in * (xmax - o_ref), g.slice(0, n, 2 * n) * (o - xmax), g_in});
    std::vector<int64_t> sizes = x.sizes().vec();
    sizes[0] = 3 * n;
    const at::Tensor routed = unpool(shares, at::cat({idx, idx.slice(0, 0, n)}), sizes);
    const at::Tensor num = routed.slice(0, 0, n) + routed.slice(0, n, 2 * n), plain = routed.slice(0, 2 * n, 3 * n);
    const at::Tensor dx = paired(x).squeeze(0);
    const at::Tensor small = dx.abs() < ctx->saved_data["eps"].toDouble();
    const at::Tensor half = at::where(small, plain, num / dx.masked_fill(small, 1));
    return {at::cat({half, half}), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// A linear or convolution layer: forward and the transposed map L^T_W(s) = d<L(x; W, 0), s>/dx.
struct Affine {
  bool conv = false, transposed = false;
  int64_t groups = 1;
  std::vector<int64_t> stride, padding, dilation, output_padding;

  at::Tensor fwd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const {
    if (!conv) return at::linear(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt);
    return at::convolution(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt, stride, padding,
                           dilation, transposed, output_padding, groups);
  }
  at::Tensor lt(const at::Tensor& s, const at::Tensor& w, const at::Tensor& x) const {
    if (!conv) return at::matmul(s, w);
    const int64_t dims = x.dim() - 2;
    if (!transposed && x.size(1) >= 8) {
      // LibTorch's own input gradient: on CPU about 3x faster than a transposed convolution
      // for the wide layers that dominate a CNN.
      return std::get<0>(at::convolution_backward(s, x, w, c10::nullopt, stride, padding, dilation, false,
                                                  output_padding, groups, {true, false, false}));
    }
    if (transposed) {
      return at::convolution(s, w, c10::nullopt, stride, padding, dilation, false, std::vector<int64_t>(dims, 0),
                             groups);
    }
    // A first layer with few input channels: the transposed convolution is the faster one.
    std::vector<int64_t> pad_out(dims);
    for (int64_t d = 0; d < dims; ++d) {
      const int64_t k = w.size(d + 2);
      pad_out[d] = x.size(d + 2) - ((s.size(d + 2) - 1) * stride[d] - 2 * padding[d] + dilation[d] * (k - 1) + 1);
    }
    return at::convolution(s, w, c10::nullopt, stride, padding, dilation, true, pad_out, groups);
  }
};

// L^T for several weights at once, [L^T_{W_1}(s), ...]: one call on the weights stacked along
// the input channels (the first layer's z-box needs three).
std::vector<at::Tensor> lt_many(const Affine& a, const at::Tensor& s, const std::vector<at::Tensor>& ws,
                                const at::Tensor& x) {
  std::vector<at::Tensor> out;
  if (a.conv && (a.groups != 1 || a.transposed)) {
    for (const auto& w : ws) out.push_back(a.lt(s, w, x));
    return out;
  }
  const int64_t dim = a.conv ? 1 : x.dim() - 1;
  std::vector<at::Tensor> xs(ws.size(), x);
  const at::Tensor stacked = a.lt(s, at::cat(ws, 1), a.conv ? at::cat(xs, 1) : x);
  return stacked.chunk(static_cast<int64_t>(ws.size()), dim);
}

// L(x1; W1, b) + L(x2; W2, 0) in one call, the inputs and weights stacked along the input channels.
at::Tensor fwd_pair(const Affine& a, const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& w1,
                    const at::Tensor& w2, const at::Tensor& b) {
  if (a.conv && (a.groups != 1 || a.transposed)) return a.fwd(x1, w1, b) + a.fwd(x2, w2, at::Tensor());
  return a.fwd(at::cat({x1, x2}, a.conv ? 1 : x1.dim() - 1), at::cat({w1, w2}, 1), b);
}

// The layer's output without its bias (zero_params = "bias", z-box): y - b.
at::Tensor without_bias(const at::Tensor& y, const at::Tensor& bias, const Affine& a) {
  if (!bias.defined()) return y;
  if (!a.conv) return y - bias;
  std::vector<int64_t> shape(y.dim(), 1);
  shape[1] = bias.size(0);
  return y - bias.view(shape);
}

// Bounds of the z-box rule broadcast to x: a scalar, one value per channel, or x's shape.
at::Tensor bound_like(const at::Tensor& bound, const at::Tensor& x) {
  at::Tensor b = bound.to(x.options());
  if (b.numel() == 1) return b.reshape({}).expand(x.sizes());
  if (b.dim() == 1 && x.dim() >= 2 && b.size(0) == x.size(1)) {
    std::vector<int64_t> shape(x.dim(), 1);
    shape[1] = b.size(0);
    return b.view(shape).expand(x.sizes());
  }
  return b.expand(x.sizes());
}

class AffineFn : public torch::autograd::Function<AffineFn> {
 public:
  // ints = {conv, transposed, groups, rule, dims, stride[dims], padding[dims], dilation[dims], output_padding[dims]}
  // Optional tensors travel as c10::optional: LibTorch 1.13's Function::apply rejects undefined ones.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& low_bound,
                            const c10::optional<at::Tensor>& high_bound, std::vector<int64_t> ints,
                            std::vector<double> p) {
    const at::Tensor b = opt(bias), low = opt(low_bound), high = opt(high_bound);
    const Affine a = unpack(ints);
    at::Tensor y = a.fwd(x, w, b);
    ctx->save_for_backward({x, w, b, low, high, y});
    ctx->saved_data["ints"] = ints;
    ctx->saved_data["p"] = p;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &low = saved[3], &high = saved[4], &y = saved[5];
    const auto ints = ctx->saved_data["ints"].toIntVector();
    const auto p = ctx->saved_data["p"].toDoubleVector();
    const Affine a = unpack(ints);
    const int64_t rule = ints[3];
    const double eps = p[0], gamma = p[1], alpha = p[2], beta = p[3];
    const at::Tensor b = p[4] != 0 ? at::Tensor() : saved[2];
    const at::Tensor& r = grads[0];
    auto part = [](const at::Tensor& t, bool positive) {
      if (!t.defined()) return t;
      return positive ? t.clamp_min(0) : t.clamp_max(0);
    };
    auto add_bias = [](const at::Tensor& t, const at::Tensor& bias, double scale) {
      return bias.defined() ? t + scale * bias : t;
    };
    at::Tensor gi;
    switch (rule) {
      case kRuleGradient: gi = a.lt(r, w, x); break;
      case kRuleEpsilon: {
        const at::Tensor z = b.defined() ? y : without_bias(y, saved[2], a);
        gi = x * a.lt(r / stab(z, eps), w, x);
        break;
      }
      case kRuleZero: {
        const at::Tensor z = b.defined() ? y : without_bias(y, saved[2], a);
        const at::Tensor zero = z == 0;
        gi = x * a.lt(at::where(zero, at::zeros_like(r), r / at::where(zero, at::ones_like(z), z)), w, x);
        break;
      }
      case kRuleAlphaBeta: {
        const at::Tensor wp = w.clamp_min(0), wn = w.clamp_max(0);
        if (!(x < 0).any().item<bool>()) {
          // x >= 0: z_alpha = L(x; W^+, b^+) and z_beta = L(x; W^-, b^-) = z - z_alpha.
          const at::Tensor z = b.defined() ? y : without_bias(y, saved[2], a);
          const at::Tensor za = a.fwd(x, wp, part(b, true));
          at::Tensor g = a.lt(alpha * r / stab(za, eps), wp, x);
          if (beta != 0) g = g - a.lt(beta * r / stab(z - za, eps), wn, x);
          gi = x * g;
          break;
        }
        const at::Tensor xp = x.clamp_min(0), xn = x.clamp_max(0);
        // One sign pattern: x+ with W_a and bias b_a, x- with W_b and no bias.
        auto branch = [&](const at::Tensor& wa, const at::Tensor& wb, const at::Tensor& ba) {
          const at::Tensor s = r / stab(fwd_pair(a, xp, xn, wa, wb, ba), eps);
          const auto g = lt_many(a, s, {wa, wb}, x);
          return xp * g[0] + xn * g[1];
        };
        gi = alpha * branch(wp, wn, part(b, true));
        if (beta != 0) gi = gi - beta * branch(wn, wp, part(b, false));
        break;
      }
      case kRuleGamma: {
        // zennit's Gamma: W+ = W + gamma W^+ for positive inputs of neurons with y > 0, W- = W +
        // gamma W^- for those with y < 0 (negative inputs take the other one); y = 0 gets nothing.
        const at::Tensor wp = w.clamp_min(0), bp = part(b, true);
        if (!(x < 0).any().item<bool>()) {
          // x >= 0 (after a ReLU): z+ = y + gamma L(x; W^+, b^+), z- = (1 + gamma) y - gamma L(x; W^+, b^+),
          // and L^T_{W+}(s+) + L^T_{W-}(s-) = L^T_W(s+ + (1 + gamma) s-) + gamma L^T_{W^+}(s+ - s-):
          // one extra layer pass forward and two backward.
          const at::Tensor yb = b.defined() ? y : without_bias(y, saved[2], a);
          const at::Tensor plus = a.fwd(x, wp, bp);
          const at::Tensor sp = (r / stab(at::add(yb, plus, gamma), eps)).masked_fill_(y <= 0, 0.0);
          const at::Tensor sm = (r / stab(at::add(yb * (1 + gamma), plus, -gamma), eps)).masked_fill_(y >= 0, 0.0);
          gi = x * a.lt(at::add(sp, sm, 1 + gamma), w, x).add_(a.lt(at::sub(sp, sm).mul_(gamma), wp, x));
          break;
        }
        const at::Tensor wn = w.clamp_max(0), bn = part(b, false);
        const at::Tensor wu = w + gamma * wp, wd = w + gamma * wn;
        const at::Tensor bu = add_bias(b, bp, gamma), bd = add_bias(b, bn, gamma);
        const at::Tensor xp = x.clamp_min(0), xn = x.clamp_max(0);
        const at::Tensor sp = (r / stab(fwd_pair(a, xp, xn, wu, wd, bu), eps)).masked_fill_(y <= 0, 0.0);
        const at::Tensor sm = (r / stab(fwd_pair(a, xp, xn, wd, wu, bd), eps)).masked_fill_(y >= 0, 0.0);
        const auto gp = lt_many(a, sp, {wu, wd}, x), gm = lt_many(a, sm, {wd, wu}, x);
        gi = xp * (gp[0] + gm[0]) + xn * (gp[1] + gm[1]);
        break;
      }
      case kRuleZBox: {
        const at::Tensor l = bound_like(low, x), h = bound_like(high, x);
        const at::Tensor wp = w.clamp_min(0), wn = w.clamp_max(0);
        // The biases cancel (b - b^+ - b^- = 0): z = L(x; W) - L(l; W^+) - L(h; W^-).
        const at::Tensor yb = without_bias(y, saved[2], a);
        at::Tensor bounds;
        if (!a.conv || (a.groups == 1 && !a.transposed)) {
          bounds = a.fwd(at::cat({l, h}, a.conv ? 1 : x.dim() - 1), at::cat({wp, wn}, 1), at::Tensor());
        } else {
          bounds = a.fwd(l, wp, at::Tensor()) + a.fwd(h, wn, at::Tensor());
        }
        const at::Tensor s = r / stab(yb - bounds, eps);
        const auto g = lt_many(a, s, {w, wp, wn}, x);
        gi = x * g[0] - l * g[1] - h * g[2];
        break;
      }
      case kRuleWSquare: {
        const at::Tensor w2 = w * w;
        const at::Tensor z = a.fwd(at::ones_like(x), w2, b.defined() ? b * b : at::Tensor());
        gi = a.lt(r / stab(z, eps), w2, x);
        break;
      }
      case kRuleFlat: {
        const at::Tensor w1 = at::ones_like(w);
        const at::Tensor z = a.fwd(at::ones_like(x), w1, at::Tensor());
        gi = a.lt(r / stab(z, eps), w1, x);
        break;
      }
      default: throw InvalidArgument(str_cat("internal: unknown LRP rule ", rule, "."));
    }
    return {gi, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }

 public:
  static Affine unpack(const std::vector<int64_t>& ints) {
    Affine a;
    a.conv = ints.at(0) != 0;
    a.transposed = ints.at(1) != 0;
    a.groups = ints.at(2);
    const auto dims = static_cast<size_t>(ints.at(4));
    auto take = [&](size_t k) { return std::vector<int64_t>(ints.begin() + 5 + k * dims, ints.begin() + 5 + (k + 1) * dims); };
    a.stride = take(0);
    a.padding = take(1);
    a.dilation = take(2);
    a.output_padding = take(3);
    return a;
  }
};

// DeepLIFT's RevealCancel rule on a linear or convolution layer and the activation after it
// (Shrikumar et al. 2017, section 3.5.3). The layer's input differences split its output
// difference into positive and negative parts dy+ and dy- (the terms w_i dx_i of each sign);
// the activation's output difference splits into
//   dout+ = (f(y0 + dy+) - f(y0)) / 2 + (f(y0 + dy- + dy+) - f(y0 + dy-)) / 2, dout- likewise,
// with multipliers m+ = dout+ / dy+ and m- = dout- / dy-; an input's positive terms take m+, its
// negative terms m-. Summation to the output difference holds as with Rescale.
class AffineActFn : public torch::autograd::Function<AffineActFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const c10::optional<at::Tensor>& bias, std::vector<int64_t> ints, int64_t kind,
                            std::vector<double> p, double eps) {
    check_pairs(x);
    const at::Tensor b = opt(bias);
    const Affine a = AffineFn::unpack(ints);
    const at::Tensor y = a.fwd(x, w, b);
    ctx->save_for_backward({x, w, y});
    ctx->saved_data["ints"] = ints;
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["p"] = p;
    ctx->saved_data["eps"] = eps;
    return act_forward(y, kind, p);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &y = saved[2], &g = grads[0];
    const Affine a = AffineFn::unpack(ctx->saved_data["ints"].toIntVector());
    const int64_t kind = ctx->saved_data["kind"].toInt();
    const auto p = ctx->saved_data["p"].toDoubleVector();
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t n = x.size(0) / 2;
    const at::Tensor dx = x.slice(0, 0, n) - x.slice(0, n, 2 * n);
    const at::Tensor dxp = dx.clamp_min(0), dxn = dx.clamp_max(0);
    const at::Tensor wp = w.clamp_min(0), wn = w.clamp_max(0);
    const at::Tensor dyp = fwd_pair(a, dxp, dxn, wp, wn, at::Tensor());
    const at::Tensor dyn = fwd_pair(a, dxp, dxn, wn, wp, at::Tensor());
    const at::Tensor y0 = y.slice(0, n, 2 * n);
    auto f = [&](const at::Tensor& t) { return act_forward(t, kind, p); };
    const at::Tensor f0 = f(y0), fp = f(y0 + dyp), fn = f(y0 + dyn), fpn = f(y0 + dyp + dyn);
    const at::Tensor dop = 0.5 * (fp - f0) + 0.5 * (fpn - fn), don = 0.5 * (fn - f0) + 0.5 * (fpn - fp);
    // Where a part vanishes its multiplier is the derivative at the input (Captum's fallback).
    const at::Tensor slope = local_grad(y.slice(0, 0, n), kind, p, at::ones_like(y0));
    auto ratio = [&](const at::Tensor& num, const at::Tensor& den) {
      const at::Tensor small = den.abs() < eps;
      return at::where(small, slope, num / at::where(small, at::ones_like(den), den));
    };
    const at::Tensor mp = at::cat({ratio(dop, dyp), ratio(dop, dyp)}), mn = at::cat({ratio(don, dyn), ratio(don, dyn)});
    const at::Tensor dx2 = at::cat({dx, dx});
    // Inputs that moved up feed y+ through W+ and y- through W-; those that moved down the
    // reverse; those that did not move take the gradient.
    const auto up = lt_many(a, g * mp, {wp, wn}, x), down = lt_many(a, g * mn, {wn, wp}, x);
    const at::Tensor still = a.lt(g * local_grad(y, kind, p, at::ones_like(y)), w, x);
    const at::Tensor gi = at::where(dx2 > 0, up[0] + down[0], at::where(dx2 < 0, up[1] + down[1], still));
    return {gi, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class PassFn : public torch::autograd::Function<PassFn> {
 public:
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, const at::Tensor& y) {
    CANDELA_CHECK_T(ShapeMismatch, x.sizes() == y.sizes(), "internal: a pass-through rule needs equal shapes.");
    return y;
  }
  static variable_list backward(AutogradContext*, variable_list grads) { return {grads[0], at::Tensor()}; }
};

class InFn : public torch::autograd::Function<InFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x) {
    ctx->save_for_backward({x});
    return x;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0] * ctx->get_saved_variables()[0]};
  }
};

class OutFn : public torch::autograd::Function<OutFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, double eps) {
    ctx->save_for_backward({y});
    ctx->saved_data["eps"] = eps;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0] / stab(ctx->get_saved_variables()[0], ctx->saved_data["eps"].toDouble()), at::Tensor()};
  }
};

std::vector<int64_t> affine_ints(const at::Tensor& w, bool conv, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                 c10::IntArrayRef dilation, bool transposed, c10::IntArrayRef output_padding,
                                 int64_t groups, int64_t rule) {
  const int64_t dims = conv ? w.dim() - 2 : 0;
  auto expand = [&](c10::IntArrayRef v, int64_t fill) {
    std::vector<int64_t> out(v.begin(), v.end());
    if (out.empty()) out.assign(dims, fill);
    if (out.size() == 1 && dims > 1) out.assign(dims, out[0]);
    return out;
  };
  std::vector<int64_t> ints = {conv ? 1 : 0, transposed ? 1 : 0, groups, rule, dims};
  for (const auto& v : {expand(stride, 1), expand(padding, 0), expand(dilation, 1), expand(output_padding, 0)})
    ints.insert(ints.end(), v.begin(), v.end());
  return ints;
}

at::Tensor rule_act(const at::Tensor& x, int64_t kind, c10::ArrayRef<double> p, int64_t mode, double eps) {
  return ActFn::apply(x, kind, p.vec(), mode, eps);
}
at::Tensor rule_maxpool(const at::Tensor& x, c10::IntArrayRef kernel, c10::IntArrayRef stride,
                        c10::IntArrayRef padding, c10::IntArrayRef dilation, bool ceil_mode, double eps) {
  // max_pool2d's defaults: an empty stride is the kernel size.
  std::vector<int64_t> k = kernel.vec(), s = stride.empty() ? kernel.vec() : stride.vec();
  auto two = [](std::vector<int64_t> v) { return v.size() == 1 ? std::vector<int64_t>{v[0], v[0]} : v; };
  return MaxPoolFn::apply(x, two(k), two(s), two(padding.vec()), two(dilation.vec()), ceil_mode, eps);
}
at::Tensor rule_affine(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b, bool conv,
                       c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, bool transposed,
                       c10::IntArrayRef output_padding, int64_t groups, int64_t rule, c10::ArrayRef<double> p,
                       const c10::optional<at::Tensor>& low, const c10::optional<at::Tensor>& high) {
  const auto ints = affine_ints(w, conv, stride, padding, dilation, transposed, output_padding, groups, rule);
  return AffineFn::apply(x, w, b, low, high, ints, p.vec());
}
at::Tensor rule_affine_act(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b, bool conv,
                           c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, bool transposed,
                           c10::IntArrayRef output_padding, int64_t groups, int64_t kind, c10::ArrayRef<double> p,
                           double eps) {
  return AffineActFn::apply(x, w, b, affine_ints(w, conv, stride, padding, dilation, transposed, output_padding, groups, 0),
                            kind, p.vec(), eps);
}
at::Tensor rule_pass(const at::Tensor& x, const at::Tensor& y) { return PassFn::apply(x, y); }
at::Tensor rule_in(const at::Tensor& x) { return InFn::apply(x); }
at::Tensor rule_out(const at::Tensor& y, double eps) { return OutFn::apply(y, eps); }

}  // namespace

// Conservative alias analysis keeps the JIT from moving, merging or removing the ops.
TORCH_LIBRARY_FRAGMENT(candela, m) {
  const auto k = c10::AliasAnalysisKind::CONSERVATIVE;
  m.def(torch::schema("candela::rule_act(Tensor x, int kind, float[] p, int mode, float eps) -> Tensor", k));
  m.def(torch::schema("candela::rule_maxpool(Tensor x, int[] kernel, int[] stride, int[] padding, int[] dilation, "
                      "bool ceil_mode, float eps) -> Tensor",
                      k));
  m.def(torch::schema("candela::rule_affine(Tensor x, Tensor w, Tensor? b, bool conv, int[] stride, int[] padding, "
                      "int[] dilation, bool transposed, int[] output_padding, int groups, int rule, float[] p, "
                      "Tensor? low, Tensor? high) -> Tensor",
                      k));
  m.def(torch::schema("candela::rule_affine_act(Tensor x, Tensor w, Tensor? b, bool conv, int[] stride, "
                      "int[] padding, int[] dilation, bool transposed, int[] output_padding, int groups, int kind, "
                      "float[] p, float eps) -> Tensor",
                      k));
  m.def(torch::schema("candela::rule_pass(Tensor x, Tensor y) -> Tensor", k));
  m.def(torch::schema("candela::rule_in(Tensor x) -> Tensor", k));
  m.def(torch::schema("candela::rule_out(Tensor y, float eps) -> Tensor", k));
}

// One kernel for every backend: the autograd functions call ATen, which dispatches on.
TORCH_LIBRARY_IMPL(candela, CompositeImplicitAutograd, m) {
  m.impl("rule_act", TORCH_FN(rule_act));
  m.impl("rule_maxpool", TORCH_FN(rule_maxpool));
  m.impl("rule_affine", TORCH_FN(rule_affine));
  m.impl("rule_affine_act", TORCH_FN(rule_affine_act));
  m.impl("rule_pass", TORCH_FN(rule_pass));
  m.impl("rule_in", TORCH_FN(rule_in));
  m.impl("rule_out", TORCH_FN(rule_out));
}

void register_rule_ops() {}

}  // namespace candela::detail
