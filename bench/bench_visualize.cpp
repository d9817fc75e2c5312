// Feature visualisation on resnet18: wall time of `visualize` / (steps x one forward+backward of the
// same batch), the overhead ratio (target <= 1.2). The denominator replays the exact
// sequence of transformed batch sizes that the run saw (same seed, same draws) through the plain
// scripted model: forward, then backward from the same objective to the input. The ratio is Candela's
// cost beyond the network: the parametrisation (irfft, colour mixing, sigmoid), the transforms, the
// layer tap and Adam.
//
//   build/bin/bench_visualize [--threads N] [--steps S] [--batch B] [--size PX] [--layer L] [--no-upsample]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <cstdio>
#include <cstring>
#include <random>

#include "bench_util.h"
#include "candela/candela.h"

using namespace candela;
using candela::bench::Clock;
using candela::bench::since;

int main(int argc, char** argv) {
  const char* usage =
      "usage: bench_visualize [--threads N] [--steps S] [--batch B] [--size PX] [--layer L] [--no-upsample]\n"
      "Feature visualisation of channel 0 of --layer (default layer4) on the resnet18 fixture: wall time per step\n"
      "against one forward+backward of the same batch sizes. Defaults: 32 steps, batch 4, 128 px, upsampled to\n"
      "the model's 224 px as Lucent does (--no-upsample: the model sees the ~152 px transformed batch).\n\n"
      "example:\n  bench_visualize --threads 2 --steps 32\n";
  const auto args = candela::bench::parse_args(argc, argv, 1, usage);
  int64_t steps = 32, batch = 4, size = 128;
  std::string layer = "layer4";
  bool upsample = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--size") && i + 1 < argc) size = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--layer") && i + 1 < argc) layer = argv[++i];
    else if (!std::strcmp(argv[i], "--no-upsample")) upsample = false;
  }
  // As the CLI: no profiling executor (the transformed batch changes size every step).
  torch::jit::getProfilingMode() = false;
  try {
    Model m = Model::load(candela::bench::fixture("resnet18.pt"));
    const InputSpec& spec = m.input_spec();
    Objective obj = Objective::parse("channel(" + layer + ",0)");
    FeatureVisualizationOptions o;
    o.steps = steps;
    o.batch = batch;
    o.size = size;
    o.upsample = upsample ? "auto" : "none";
    // Warm-up: the JIT's first runs of the tapped graph and of the plain module.
    FeatureVisualizationOptions warm = o;
    warm.steps = 2;
    visualize(m, obj, warm);
    auto t = Clock::now();
    FeatureVisualization r = visualize(m, obj, o);
    double wall = since(t);

    // The same transformed sizes, replayed through the plain model (forward + backward to the input).
    std::mt19937_64 rng(static_cast<uint64_t>(o.seed) ^ 0x5DEECE66DULL);
    std::vector<std::pair<int64_t, int64_t>> sizes;
    at::Tensor probe = at::zeros({1, 3, size, size});
    for (int64_t s = 0; s < steps; ++s) {
      at::Tensor x = fv::standard_transforms(probe, fv::draw_transforms(rng));
      if (upsample && spec.is_image() && spec.height() > size) sizes.emplace_back(spec.height(), spec.width());
      else sizes.emplace_back(x.size(2), x.size(3));
    }
    auto taps = LayerTaps::of(m, {layer});
    auto fwd_bwd = [&](int64_t h, int64_t w) {
      at::Tensor x = at::rand({batch, 3, h, w}).requires_grad_(true);
      auto run = taps->forward(x);
      return torch::autograd::grad({run.activations[0].select(1, 0).mean()}, {x})[0];
    };
    fwd_bwd(sizes[0].first, sizes[0].second);
    t = Clock::now();
    for (const auto& [h, w] : sizes) fwd_bwd(h, w);
    double base = since(t);
    // The machine is shared: the visualisation again and the baseline again, keeping the faster run of each.
    t = Clock::now();
    r = visualize(m, obj, o);
    wall = std::min(wall, since(t));
    t = Clock::now();
    for (const auto& [h, w] : sizes) fwd_bwd(h, w);
    base = std::min(base, since(t));
    // What Candela adds, alone: the parametrisation and the transforms, forward and backward.
    std::mt19937_64 rng2(static_cast<uint64_t>(o.seed) ^ 0x5DEECE66DULL);
    at::Tensor theta = (at::randn({batch, 3, size, size / 2 + 1, 2}) * 0.01).requires_grad_(true);
    at::Tensor fscale = fv::fourier_scale(size, size, 1.0);
    t = Clock::now();
    for (int64_t s = 0; s < steps; ++s) {
      at::Tensor x = at::sigmoid(fv::decorrelate_colors(fv::fourier_image(theta, fscale, size, size)));
      x = fv::standard_transforms(x, fv::draw_transforms(rng2));
      if (upsample && spec.is_image() && spec.height() > size)
        x = at::upsample_bilinear2d(x, {spec.height(), spec.width()}, true);
      torch::autograd::grad({x.sum()}, {theta});
    }
    const double own = since(t);
    std::printf("bench_visualize: %d threads, resnet18, channel(%s,0), %lld steps, batch %lld, %lld px -> model at %s\n",
                args.threads, layer.c_str(), (long long)steps, (long long)batch, (long long)size,
                upsample && spec.is_image() && spec.height() > size ? "224 px (Lucent's upsampling)"
                                                                    : "the transformed size (~152 px)");
    std::printf("visualize:              %8.3f s  (%.1f ms/step), objective %.4f -> %.4f\n", wall,
                1e3 * wall / static_cast<double>(steps), r.objective.front(), r.objective.back());
    std::printf("forward+backward alone: %8.3f s  (%.1f ms/step)\n", base, 1e3 * base / static_cast<double>(steps));
    std::printf("parametrisation + transforms alone, forward+backward: %8.3f s (%.1f ms/step)\n", own,
                1e3 * own / static_cast<double>(steps));
    std::printf("ratio wall / (steps x forward+backward): %.3f\n", wall / base);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_visualize: %s\n", e.what());
    return 1;
  }
  return 0;
}
