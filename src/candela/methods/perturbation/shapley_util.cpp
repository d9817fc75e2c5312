#include "shapley_util.h"

#include <algorithm>
#include <cmath>

#include "candela/core/baseline.h"
#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/methods/perturbation/feature_mask.h"

namespace candela::detail {

namespace {

at::Tensor forward_rows(Evaluator& ev, const std::string& stage, const at::Tensor& x) {
  std::vector<at::Tensor> outs;
  ev.forward(
      stage.c_str(), x.size(0),
      [&](int64_t b, int64_t e) {
        return Rows{x.slice(0, b, e), at::arange(b, e, at::TensorOptions().dtype(at::kLong)), {}};
      },
      [&](int64_t, int64_t, const Rows&, const at::Tensor& out) { outs.push_back(out); });
  return at::cat(outs);
}

// Group id of every element of every input [N, D], and G. Masks are checked and broadcast
// as every perturbation method does (feature_mask.h); undefined: each element its own group.
std::pair<at::Tensor, int64_t> group_ids(const at::Tensor& mask, const at::Tensor& x, const InputSpec& spec,
                                         const std::string& method) {
  const int64_t n = x.size(0), d = x.numel() / std::max<int64_t>(n, 1);
  if (!mask.defined())
    return {at::arange(d, at::TensorOptions().dtype(at::kLong)).unsqueeze(0).expand({n, d}).contiguous(), d};
  at::Tensor m = expand_feature_mask(mask, x, spec).reshape({n, d}).contiguous();
  const int64_t g = feature_count(m);
  CANDELA_CHECK(g <= d, method, ": feature_mask ids must be 0..G-1 with G at most the ", d,
                " elements of an input; found id ", g - 1, ". Renumber the groups from 0.");
  return {m, g};
}

}  // namespace

ShapleyGame::ShapleyGame(Evaluator& ev, const ExplainRequest& req, uint64_t seed, std::string method,
                         const std::function<void(int64_t)>& check_groups)
    : ev_(ev), method_(std::move(method)) {
  const at::Tensor& x = req.inputs;
  CANDELA_CHECK(x.dim() >= 1 && x.size(0) >= 1, method_, ": needs at least one input row.");
  n_ = x.size(0);
  shape_.assign(x.sizes().begin() + 1, x.sizes().end());
  d_ = x.numel() / n_;
  x_ = x.reshape({n_, d_}).contiguous();
  std::tie(gid_, g_) = group_ids(req.feature_mask, x, ev.model().input_spec(), method_);
  if (check_groups) check_groups(g_);

  const std::string layout = ev.model().input_spec().layout;
  if (req.baseline.is_distribution()) {
    at::Tensor s;
    try {
      s = req.baseline.samples(x, layout, seed);
    } catch (const ShapeMismatch& e) {
      throw ShapeMismatch(str_cat(method_, ": ", e.what(), " Give background rows shaped like one input, ",
                                  shape_str(x.sizes().slice(1)),
                                  " (for tabular data: rows of the training set with the same columns)."));
    }
    CANDELA_CHECK(s.size(0) >= 1, method_, ": the background distribution has no rows; give at least one.");
    bg_ = s.reshape({s.size(0), d_}).to(x.options()).contiguous();
  } else {
    bg_ = req.baseline.for_inputs(x, layout, seed).reshape({n_, d_}).to(x.options()).contiguous();
    per_input_ = true;
  }

  out_x_ = forward_rows(ev_, method_ + ": f(inputs)", x);
  target_ = req.target.resolve(out_x_);
  const at::Tensor idx = at::arange(n_, at::TensorOptions().dtype(at::kLong));
  at::Tensor fx = target_.scores(out_x_, idx).to(at::kCPU, at::kDouble).contiguous();
  full_.assign(fx.data_ptr<double>(), fx.data_ptr<double>() + n_);

  std::vector<int64_t> bg_shape = shape_;
  bg_shape.insert(bg_shape.begin(), bg_.size(0));
  const at::Tensor out_bg = forward_rows(ev_, method_ + ": f(reference)", bg_.view(bg_shape));
  empty_.resize(n_);
  for (int64_t i = 0; i < n_; ++i) {
    if (per_input_) {
      empty_[i] = target_.scores(out_bg.slice(0, i, i + 1), idx.slice(0, i, i + 1)).to(at::kDouble).item<double>();
    } else {
      at::Tensor s = at::full({out_bg.size(0)}, i, at::TensorOptions().dtype(at::kLong));
      empty_[i] = target_.scores(out_bg, s).to(at::kDouble).mean().item<double>();
    }
  }
}

std::vector<int64_t> ShapleyGame::varying(int64_t i) const {
  const at::Tensor xi = x_[i].to(at::kCPU, at::kDouble).unsqueeze(0);
  const at::Tensor b = (per_input_ ? bg_.slice(0, i, i + 1) : bg_).to(at::kCPU, at::kDouble);
  const at::Tensor differs = ((xi - b).abs() > 1e-8 + 1e-5 * b.abs()).any(0);
  at::Tensor count = at::zeros({g_}, at::TensorOptions().dtype(at::kLong)).index_add_(0, gid_[i], differs.to(at::kLong));
  std::vector<int64_t> out;
  auto c = count.accessor<int64_t, 1>();
  for (int64_t g = 0; g < g_; ++g)
    if (c[g] > 0) out.push_back(g);
  return out;
}

std::vector<std::vector<double>> ShapleyGame::values(const std::vector<int64_t>& counts, const Masks& masks,
                                                     int64_t cap) {
  const int64_t mb = background_rows();
  std::vector<int64_t> row_off(n_ + 1, 0), coal_off(n_ + 1, 0);
  for (int64_t i = 0; i < n_; ++i) {
    coal_off[i + 1] = coal_off[i] + counts[i];
    row_off[i + 1] = row_off[i] + counts[i] * mb;
  }
  at::Tensor acc = at::zeros({coal_off[n_]}, at::TensorOptions().dtype(at::kDouble));
  const auto device = x_.device();
  const auto lopt = at::TensorOptions().dtype(at::kLong);
  std::vector<int64_t> row_shape = shape_;
  row_shape.insert(row_shape.begin(), -1);

  // Each row equals an input outside the features its coalition leaves out, and a background
  // row outside those it takes in: the closer one is its reference for local re-evaluation
  // (Evaluator::forward), for images and a few references (their activations are kept).
  const int64_t nbg = bg_.size(0);
  at::Tensor references;
  if (shape_.size() == 3 && n_ + nbg <= 16) references = at::cat({x_, bg_}).view(row_shape);
  // The coalitions that differ from one of them in the fewest features go first, so that they
  // share batches (nothing else changes: each value lands at its coalition's index).
  std::vector<at::Tensor> all_masks(n_), order(n_);
  for (int64_t i = 0; i < n_ && references.defined(); ++i) {
    if (counts[i] == 0 || counts[i] * g_ > (int64_t(1) << 22)) continue;
    all_masks[i] = masks(i, 0, counts[i]).to(at::kCPU, at::kBool);
    const at::Tensor on = all_masks[i].to(at::kLong).sum(1);
    order[i] = std::get<1>(at::minimum(on, g_ - on).sort(/*stable=*/true, 0, false));
  }
  // Coalitions at positions [k0, k1) of input i's stream, and their indices.
  auto coalitions = [&](int64_t i, int64_t k0, int64_t k1) -> std::pair<at::Tensor, at::Tensor> {
    if (!order[i].defined()) return {masks(i, k0, k1), at::arange(k0, k1, lopt)};
    const at::Tensor idx = order[i].slice(0, k0, k1);
    return {all_masks[i].index_select(0, idx), idx};
  };
  // Rows of input i: the coalition at position k has background rows j at rows k * mb + j.
  auto make = [&](int64_t b, int64_t e) {
    std::vector<at::Tensor> ins, samples, flats, refs;
    int64_t i = std::upper_bound(row_off.begin(), row_off.end(), b) - row_off.begin() - 1;
    for (; i < n_ && row_off[i] < e; ++i) {
      const int64_t lb = std::max(b, row_off[i]) - row_off[i], le = std::min(e, row_off[i + 1]) - row_off[i];
      if (le <= lb) continue;
      const int64_t k0 = lb / mb, k1 = (le - 1) / mb + 1;
      const auto [coal, index] = coalitions(i, k0, k1);  // [k1 - k0, G], [k1 - k0]
      const at::Tensor elem = coal.to(at::kCPU, at::kBool).index_select(1, gid_[i]);
      const at::Tensor r = at::arange(lb, le, lopt);
      const at::Tensor k = r.div(mb, "floor");
      const at::Tensor on = elem.index_select(0, k - k0).to(device);
      const at::Tensor other = per_input_ ? bg_[i].unsqueeze(0).expand({le - lb, d_})
                                          : bg_.index_select(0, r.remainder(mb).to(device));
      const at::Tensor sample = at::full({le - lb}, i, lopt);
      ins.push_back(at::where(on, x_[i].unsqueeze(0), other));
      samples.push_back(sample);
      flats.push_back(index.index_select(0, k - k0) + coal_off[i]);
      if (references.defined()) {
        const at::Tensor mostly_off = coal.to(at::kCPU, at::kLong).sum(1).index_select(0, k - k0).mul(2).le(g_);
        const at::Tensor bg_row = (per_input_ ? sample : r.remainder(mb)) + n_;
        refs.push_back(at::where(mostly_off, bg_row, sample));
      }
    }
    Rows rows{at::cat(ins).view(row_shape), at::cat(samples), at::cat(flats)};
    if (references.defined()) rows.reference = at::cat(refs);
    return rows;
  };
  if (row_off[n_] > 0) {
    ev_.forward((method_ + ": coalitions").c_str(), row_off[n_], make,
                [&](int64_t, int64_t, const Rows& rows, const at::Tensor& out) {
                  acc.index_add_(0, rows.aux, target_.scores(out, rows.sample).to(at::kCPU, at::kDouble));
                },
                cap > 0 ? cap * mb : 0, references);
  }
  acc /= static_cast<double>(mb);
  std::vector<std::vector<double>> v(n_);
  const double* p = acc.data_ptr<double>();
  for (int64_t i = 0; i < n_; ++i) v[i].assign(p + coal_off[i], p + coal_off[i + 1]);
  return v;
}

Attribution ShapleyGame::finish(const std::vector<std::vector<double>>& phi) const {
  at::Tensor t = at::zeros({n_, g_}, at::TensorOptions().dtype(at::kDouble));
  auto a = t.accessor<double, 2>();
  std::vector<double> delta(n_), change(n_);
  for (int64_t i = 0; i < n_; ++i) {
    double sum = 0;
    for (int64_t g = 0; g < g_; ++g) sum += a[i][g] = phi[i][g];
    change[i] = full_[i] - empty_[i];
    delta[i] = sum - change[i];
  }
  std::vector<int64_t> shape = shape_;
  shape.insert(shape.begin(), n_);
  Attribution out;
  out.values = t.gather(1, gid_).view(shape).to(x_.options());
  out.output = out_x_;
  out.targets = target_.classes(out_x_);
  out.convergence_delta = at::tensor(delta, at::kDouble).to(x_.options());
  out.output_change = at::tensor(change, at::kDouble).to(x_.options());
  out.extra["feature_groups"] = g_;
  out.extra["background_rows"] = background_rows();
  return out;
}

Rng::Rng(uint64_t seed, uint64_t stream) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + stream + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  engine_.seed(z ^ (z >> 31));
}

std::vector<double> standard_error(const std::vector<std::vector<double>>& rows, int64_t groups) {
  const size_t n = rows.size();
  std::vector<double> se(groups, std::nan(""));
  if (n < 2) return se;
  for (int64_t g = 0; g < groups; ++g) {
    double mean = 0, ss = 0;
    for (const auto& r : rows) mean += r[g];
    mean /= n;
    for (const auto& r : rows) ss += (r[g] - mean) * (r[g] - mean);
    se[g] = std::sqrt(ss / (n - 1) / n);
  }
  return se;
}

}  // namespace candela::detail
