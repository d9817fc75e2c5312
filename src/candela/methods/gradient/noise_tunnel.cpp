#include "candela/methods/gradient/noise_tunnel.h"

#include "candela/core/model.h"
#include "candela/core/registry.h"
#include "candela/detail/tensor_util.h"
#include "common.h"

namespace candela {

void NoiseTunnelOptions::validate() const {
  CANDELA_CHECK(nt_samples >= 1 && nt_samples <= 100000, "nt_samples must be in [1, 100000], got ", nt_samples, ".");
  CANDELA_CHECK(nt_samples_batch_size >= 0, "nt_samples_batch_size must be >= 0 (0 = automatic).");
  CANDELA_CHECK(stdevs >= 0 && std::isfinite(stdevs), "stdevs must be a finite number >= 0, got ", stdevs, ".");
  CANDELA_CHECK(seed >= 0, "seed must be >= 0.");
  CANDELA_CHECK(base_method != "noise_tunnel", "noise_tunnel cannot wrap itself; pick another base_method.");
  CANDELA_CHECK(base_options.is_object(), "base_options must be a JSON object, got ", base_options.dump(), ".");
}

NoiseTunnel::NoiseTunnel(Options options) : Method(std::move(options)) {
  base_ = Registry::builtin().create(options_.base_method, options_.base_options);
}

nlohmann::json NoiseTunnel::options() const {
  nlohmann::json j = options_to_json(options_);
  j["base_options"] = base_->options();  // with the wrapped method's defaults filled in
  return j;
}

bool NoiseTunnel::uses_baseline() const { return base_->uses_baseline(); }

Attribution NoiseTunnel::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0), total = options_.nt_samples;
  // Noisy copies are materialised a chunk at a time: by default as many as fit in a quarter
  // of the memory budget, so nt_samples in the thousands never builds one giant batch.
  const double input_bytes = static_cast<double>(x.numel() * x.element_size());
  const int64_t fits = static_cast<int64_t>(ev.options().max_memory_mb * 1024.0 * 1024.0 / (4.0 * input_bytes));
  const int64_t chunk = options_.nt_samples_batch_size > 0 ? std::min(options_.nt_samples_batch_size, total)
                                                           : std::clamp<int64_t>(fits, 1, total);
  const std::string layout = ev.model().input_spec().layout;

  // Every noisy copy explains the class chosen at the clean input.
  const at::Tensor out_x = detail::forward_all(ev, "noise_tunnel: target", x);
  const Target target = req.target.resolve(out_x);
  at::Tensor distribution, single;
  if (base_->uses_baseline()) {
    if (options_.draw_baseline_from_distrib) distribution = req.baseline.samples(x, layout, options_.seed);
    else single = req.baseline.for_inputs(x, layout, options_.seed);
  }

  at::Tensor sum = at::zeros_like(x), sum_sq = at::zeros_like(x);
  for (int64_t s0 = 0; s0 < total; s0 += chunk) {
    const int64_t k = std::min(chunk, total - s0);
    // Copy s of every sample gets the noise of draw s: batch-invariant and seeded.
    std::vector<at::Tensor> noise;
    std::vector<int64_t> source, pick;
    for (int64_t s = s0; s < s0 + k; ++s) {
      auto gen = detail::seeded_generator(options_.seed, s);
      noise.push_back(at::normal(0.0, options_.stdevs, x.sizes().slice(1), gen, x.options().device(at::kCPU)));
      if (distribution.defined())
        pick.push_back(at::randint(distribution.size(0), {1}, gen, at::TensorOptions().dtype(at::kLong)).item<int64_t>());
    }
    at::Tensor noise_t = at::stack(noise).to(x.device());  // [k, ...]
    // Sample-major rows: row i * k + j is copy s0 + j of sample i.
    std::vector<int64_t> rows_shape(x.sizes().begin(), x.sizes().end());
    rows_shape[0] = n * k;
    at::Tensor noisy = (x.unsqueeze(1) + noise_t.unsqueeze(0)).reshape(rows_shape);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) source.push_back(i);

    ExplainRequest sub;
    sub.inputs = noisy;
    sub.target = target.gather(source);
    sub.eval = req.eval;
    if (distribution.defined()) {
      at::Tensor idx = at::tensor(pick, at::kLong).to(x.device()).repeat({n});
      sub.baseline = Baseline::tensor(distribution.index_select(0, idx));
    } else if (single.defined()) {
      sub.baseline = Baseline::tensor(single.repeat_interleave(k, 0));
    }
    at::Tensor a = base_->attribute(ev, sub).values;
    std::vector<int64_t> shape = {n, k};
    shape.insert(shape.end(), x.sizes().begin() + 1, x.sizes().end());
    a = a.reshape(shape);
    sum += a.sum(1);
    sum_sq += (a * a).sum(1);
  }
  const at::Tensor mean = sum / static_cast<double>(total), mean_sq = sum_sq / static_cast<double>(total);
  Attribution out;
  if (options_.nt_type == "smoothgrad") out.values = mean;
  else if (options_.nt_type == "smoothgrad_sq") out.values = mean_sq;
  else out.values = mean_sq - mean * mean;
  out.output = out_x;
  out.targets = target.classes(out_x);
  out.extra = {{"base_method", options_.base_method}};
  return out;
}

}  // namespace candela
