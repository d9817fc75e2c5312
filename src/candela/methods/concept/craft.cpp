// CRAFT (methods/concept/craft.h).
#include "candela/methods/concept/craft.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/taps.h"

namespace candela {
namespace {

constexpr double kTiny = 1e-12;  // keeps the multiplicative updates' denominators positive

double relative_error(const at::Tensor& a, const at::Tensor& u, const at::Tensor& w) {
  return ((a - at::mm(u, w)).norm() / a.norm().clamp_min(kTiny)).item<double>();
}

}  // namespace

NmfResult nmf(const at::Tensor& a_in, int64_t rank, int64_t max_iter, double tol, int64_t seed) {
  CANDELA_CHECK(a_in.dim() == 2, "NMF factorises a matrix [P, F], got ", detail::shape_str(a_in.sizes()), ".");
  CANDELA_CHECK(rank >= 1 && rank <= std::min(a_in.size(0), a_in.size(1)), "NMF rank must be in [1, min(P, F)] = [1, ",
                std::min(a_in.size(0), a_in.size(1)), "], got ", rank, ".");
  CANDELA_CHECK(max_iter >= 1, "NMF needs max_iter >= 1, got ", max_iter, ".");
  const at::Tensor a = a_in.to(at::kDouble);
  CANDELA_CHECK(a.min().item<double>() >= 0, "NMF needs non-negative activations (after a ReLU); the smallest is ",
                a.min().item<double>(), ". Choose a layer whose output has passed a ReLU.");
  at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  // scikit-learn's init="random": |N(0, 1)| * sqrt(mean(A) / rank).
  const double scale = std::sqrt(a.mean().item<double>() / static_cast<double>(rank));
  at::Tensor u = at::randn({a.size(0), rank}, gen).to(at::kDouble).abs() * scale;
  at::Tensor w = at::randn({rank, a.size(1)}, gen).to(at::kDouble).abs() * scale;
  NmfResult r;
  double previous = relative_error(a, u, w);
  for (int64_t it = 1; it <= max_iter; ++it) {
    // Lee & Seung (2001): W <- W ⊙ (UᵀA) / (UᵀU W), U <- U ⊙ (A Wᵀ) / (U W Wᵀ).
    w = w * at::mm(u.t(), a) / at::mm(at::mm(u.t(), u), w).clamp_min(kTiny);
    u = u * at::mm(a, w.t()) / at::mm(u, at::mm(w, w.t())).clamp_min(kTiny);
    r.iterations = it;
    if (it % 10 == 0) {
      const double e = relative_error(a, u, w);
      if (previous - e < tol) break;
      previous = e;
    }
  }
  r.relative_error = relative_error(a, u, w);
  r.u = u;
  r.w = w;
  return r;
}

at::Tensor nmf_transform(const at::Tensor& a_in, const at::Tensor& w_in, int64_t max_iter) {
  CANDELA_CHECK(a_in.dim() == 2 && w_in.dim() == 2 && a_in.size(1) == w_in.size(1),
                "NMF transform needs A [P, F] and W [r, F], got ", detail::shape_str(a_in.sizes()), " and ",
                detail::shape_str(w_in.sizes()), ".");
  const at::Tensor a = a_in.to(at::kDouble).clamp_min(0), w = w_in.to(at::kDouble);
  const at::Tensor wwt = at::mm(w, w.t()), awt = at::mm(a, w.t());
  // Start from the least-squares solution's positive part, then multiplicative updates.
  at::Tensor u = std::get<0>(at::linalg_lstsq(w.t(), a.t())).t().clamp_min(1e-3 * (a.mean().item<double>() + kTiny));
  for (int64_t it = 0; it < max_iter; ++it) u = u * awt / at::mm(u, wwt).clamp_min(kTiny);
  return u;
}

at::Tensor sobol_sequence(int64_t dim, int64_t n) {
  constexpr int64_t kMaxBit = 30;
  CANDELA_CHECK(dim >= 1 && dim <= 21201, "a Sobol sequence has 1 to 21201 dimensions, got ", dim, ".");
  CANDELA_CHECK(n >= 1, "need at least one Sobol point, got ", n, ".");
  at::Tensor state = at::zeros({dim, kMaxBit}, at::kLong);
  at::_sobol_engine_initialize_state_(state, dim);
  at::Tensor quasi = at::zeros({dim}, at::kLong);
  at::Tensor first = at::zeros({1, dim}, at::kDouble);
  if (n == 1) return first;
  auto drawn = at::_sobol_engine_draw(quasi, n - 1, state, dim, 0, at::kDouble);
  return at::cat({first, std::get<0>(drawn)}, 0);
}

at::Tensor sobol_masks(int64_t d, int64_t nb_design) {
  CANDELA_CHECK(d >= 1 && nb_design >= 2, "Sobol masks need d >= 1 and nb_design >= 2, got ", d, " and ", nb_design, ".");
  at::Tensor points = sobol_sequence(2 * d, nb_design);
  at::Tensor a = points.narrow(1, 0, d), b = points.narrow(1, d, d);
  std::vector<at::Tensor> parts = {a, b};
  for (int64_t i = 0; i < d; ++i) {
    at::Tensor c = a.clone();
    c.select(1, i).copy_(b.select(1, i));
    parts.push_back(c);
  }
  return at::cat(parts, 0);
}

at::Tensor jansen_total_indices(const at::Tensor& outputs, int64_t d, int64_t nb_design) {
  CANDELA_CHECK(outputs.dim() == 1 && outputs.size(0) == nb_design * (d + 2), "Jansen's estimator needs ",
                nb_design * (d + 2), " outputs (nb_design * (d + 2)), got ", detail::shape_str(outputs.sizes()), ".");
  const at::Tensor y = outputs.to(at::kDouble);
  const at::Tensor fa = y.narrow(0, 0, nb_design), fb = y.narrow(0, nb_design, nb_design);
  const double var = at::cat({fa, fb}).var(/*unbiased=*/false).item<double>();
  at::Tensor st = at::zeros({d}, at::kDouble);
  if (var <= 0) return st;  // a constant output depends on nothing
  for (int64_t i = 0; i < d; ++i) {
    const at::Tensor fc = y.narrow(0, nb_design * (2 + i), nb_design);
    st[i] = (fa - fc).pow(2).mean().item<double>() / (2 * var);
  }
  return st;
}

void CraftOptions::validate() const {
  CANDELA_CHECK(number_of_concepts >= 1, "number_of_concepts must be >= 1, got ", number_of_concepts, ".");
  CANDELA_CHECK(patch_size >= 2, "patch_size must be >= 2 pixels, got ", patch_size, ".");
  CANDELA_CHECK(nb_design >= 2, "nb_design must be >= 2, got ", nb_design, ".");
  CANDELA_CHECK(max_iter >= 1, "max_iter must be >= 1, got ", max_iter, ".");
  CANDELA_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size, ".");
}

CraftResult craft(const Model& model, const std::string& layer, const at::Tensor& inputs, int64_t target,
                  const CraftOptions& options, const ProgressCallback& progress, const CancelToken& cancel) {
  options.validate();
  CANDELA_CHECK(inputs.dim() == 4, "CRAFT cuts images [N, C, H, W] into patches, got ", detail::shape_str(inputs.sizes()),
                ".");
  CANDELA_CHECK(model.input_spec().layout != "NHWC", "CRAFT needs an NCHW model input.");
  const int64_t n = inputs.size(0), c = inputs.size(1), h = inputs.size(2), wd = inputs.size(3);
  const int64_t ps = options.patch_size;
  CANDELA_CHECK(ps <= h && ps <= wd, "patch_size ", ps, " is larger than the images (", h, "x", wd, ").");
  auto taps = LayerTaps::of(model, {layer});
  auto check_cancel = [&] {
    if (cancel.cancelled()) throw Cancelled("CRAFT cancelled.");
  };
  // 1. Patches, resized to the image size (F.interpolate's default: nearest).
  const int64_t stride = std::max<int64_t>(1, static_cast<int64_t>(ps * 0.8));
  at::Tensor cols = at::im2col(inputs, {ps, ps}, {1, 1}, {0, 0}, {stride, stride});  // [N, C*ps*ps, L]
  at::Tensor patches = cols.permute({0, 2, 1}).reshape({-1, c, ps, ps}).contiguous();
  const int64_t p = patches.size(0);
  // 2. Activations, spatially averaged.
  auto latent = [&](const at::Tensor& x) {
    at::Tensor a = taps->forward(x).activations[0];
    return a.dim() == 4 ? a.mean({2, 3}) : a.reshape({a.size(0), -1});
  };
  std::vector<at::Tensor> acts;
  {
    at::NoGradGuard no_grad;
    for (int64_t i = 0; i < p; i += options.batch_size) {
      check_cancel();
      at::Tensor batch = patches.narrow(0, i, std::min(options.batch_size, p - i));
      acts.push_back(latent(at::upsample_nearest2d(batch, {h, wd})).to(at::kDouble));
      if (progress) progress({"craft: patches", std::min(i + options.batch_size, p), p});
    }
  }
  at::Tensor a = at::cat(acts);
  CANDELA_CHECK(a.min().item<double>() >= 0, "CRAFT needs non-negative activations at ", layer, " (the smallest is ",
                a.min().item<double>(), "): choose a layer after a ReLU.");
  const int64_t rank = std::min({options.number_of_concepts, a.size(0), a.size(1)});
  NmfResult f = nmf(a, rank, options.max_iter, 1e-6, options.seed);
  // 3. Importance by total Sobol indices, per image.
  const at::Tensor masks = sobol_masks(rank, options.nb_design);  // [nb*(r+2), r]
  at::Tensor importances = at::zeros({rank}, at::kDouble);
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < n; ++i) {
    check_cancel();
    at::Tensor x = inputs.narrow(0, i, 1);
    at::Tensor act = taps->forward(x).activations[0];  // [1, F, h', w'] or [1, F]
    const bool spatial = act.dim() == 4;
    at::Tensor flat = spatial ? act[0].permute({1, 2, 0}).reshape({-1, act.size(1)}) : act.reshape({1, -1});
    at::Tensor u = nmf_transform(flat.to(at::kDouble), f.w);  // [positions, r]
    std::vector<at::Tensor> outs;
    for (int64_t m0 = 0; m0 < masks.size(0); m0 += options.batch_size) {
      const int64_t k = std::min(options.batch_size, masks.size(0) - m0);
      at::Tensor mk = masks.narrow(0, m0, k);                                     // [k, r]
      at::Tensor rebuilt = at::matmul(u.unsqueeze(0) * mk.unsqueeze(1), f.w);    // [k, positions, F]
      at::Tensor layer_out = spatial ? rebuilt.reshape({k, act.size(2), act.size(3), act.size(1)}).permute({0, 3, 1, 2})
                                     : rebuilt.reshape({k, act.size(1)});
      layer_out = layer_out.to(act.scalar_type()).contiguous();
      at::Tensor y = taps->forward(x.expand({k, c, h, wd}).contiguous(), {layer_out}).output;
      CANDELA_CHECK(y.dim() == 2 && target >= 0 && target < y.size(1), "target ", target,
                    " is not an output of the model (output ", detail::shape_str(y.sizes()), ").");
      outs.push_back(y.select(1, target).to(at::kDouble));
    }
    importances += jansen_total_indices(at::cat(outs), rank, options.nb_design);
    if (progress) progress({"craft: importance", i + 1, n});
  }
  CraftResult r;
  r.patches = patches;
  r.u = f.u;
  r.w = f.w;
  r.importances = importances / static_cast<double>(n);
  r.nmf_relative_error = f.relative_error;
  return r;
}

}  // namespace candela
