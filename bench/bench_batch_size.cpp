// Batch sizes by measurement (EvalOptions::measure_batch_size) against the memory budget's
// size (CANDELA_NO_BATCH_MEASURE=1), in one run, alternating, on resnet18 224x224, one image,
// at the default --max-memory. First the forward passes alone at fixed batch sizes (the curve
// the measurement has to find), then each method end to end: its first run on a fresh model
// with no measurement on disk (the measurement included: what the first CLI call on a machine
// pays) and the best of `repeats` later runs (the size known: every later process, a server,
// the Python package).
//
//   build/bin/bench_batch_size [--threads N] [--repeats R]
#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "bench_util.h"
#include "candela/candela.h"

using namespace candela;
using candela::bench::Clock;
using candela::bench::since;

namespace {

void measure(bool on) { candela::bench::switch_off("CANDELA_NO_BATCH_MEASURE", !on); }

struct Case {
  std::string method;
  nlohmann::json options;
  const char* mask = nullptr;  // feature mask spec
};

}  // namespace

int main(int argc, char** argv) {
  const auto args = candela::bench::parse_args(argc, argv);
  std::string cache = (std::filesystem::temp_directory_path() / "candela-bench-XXXXXX").string();
  if (!::mkdtemp(cache.data())) return 1;
  ::setenv("CANDELA_CACHE_DIR", cache.c_str(), 1);  // measured afresh, whatever ~/.cache holds
  try {
    const std::string path = candela::bench::fixture("resnet18.pt");
    const at::Tensor x = at::randn({1, 3, 224, 224}, at::detail::createCPUGenerator(0));
    std::printf("bench_batch_size: %d threads, resnet18 224x224, best of %d, alternating\n", args.threads,
                args.repeats);
    {
      Model m = Model::load(path);
      std::printf("\nforward passes through the inference graph, ms per row:\n");
      for (int64_t b : {1, 2, 4, 8, 16, 32, 64}) {
        const at::Tensor xb = x.expand({b, 3, 224, 224}).contiguous();
        for (int i = 0; i < 2; ++i) m.forward_inference(xb);  // graph built, shape warmed up
        double best = 1e30;
        for (int r = 0; r < args.repeats; ++r) {
          auto t = Clock::now();
          for (int64_t k = 0; k < std::max<int64_t>(1, 64 / b); ++k) m.forward_inference(xb);
          best = std::min(best, since(t) / static_cast<double>(std::max<int64_t>(1, 64 / b) * b));
        }
        std::printf("  batch %3lld  %6.2f\n", (long long)b, 1000 * best);
      }
    }
    const nlohmann::json layer4 = {{"layers", {"layer4"}}};
    const std::vector<Case> cases = {
        {"occlusion", {{"sliding_window_shapes", {3, 32, 32}}, {"strides", {3, 16, 16}}}},
        {"score_cam", layer4},
        {"rise", {{"n_masks", 256}}},
        {"lime", {{"num_samples", 100}}, "grid:32"},
        {"feature_ablation", nlohmann::json::object(), "grid:32"},
        {"integrated_gradients", {{"n_steps", 50}}},
        {"noise_tunnel", {{"nt_samples", 10}, {"stdevs", 0.15}}},
        {"gradient_shap", {{"n_samples", 20}}},
    };
    std::printf("\n%-22s %22s %22s %14s\n", "", "budget's size", "measured", "budget / meas.");
    std::printf("%-22s %8s %4s %8s %8s %4s %8s %7s %6s\n", "s", "first", "b", "later", "first", "b", "later",
                "first", "later");
    for (const auto& c : cases) {
      auto e = Registry::builtin().create(c.method, c.options);
      // A fresh model per side, so that the first run includes the trials and the graph's build.
      Model models[2] = {Model::load(path), Model::load(path)};
      ExplainRequest r;
      r.inputs = x;
      r.target = Target::index(3);
      if (c.mask) r.feature_mask = make_feature_mask(c.mask, x, models[0].input_spec());
      double first[2], later[2] = {1e30, 1e30};
      int64_t batch_later[2] = {0, 0};
      std::filesystem::remove(std::filesystem::path(cache) / "batch-sizes.json");
      for (int side : {0, 1}) {
        measure(side == 1);
        auto t = Clock::now();
        e->explain(models[side], r);
        first[side] = since(t);
      }
      for (int i = 0; i < args.repeats; ++i) {
        for (int side : {0, 1}) {
          measure(side == 1);
          auto t = Clock::now();
          Attribution a = e->explain(models[side], r);
          later[side] = std::min(later[side], since(t));
          batch_later[side] = a.batch_size;
        }
      }
      measure(true);
      std::printf("%-22s %8.3f %4lld %8.3f %8.3f %4lld %8.3f %6.2fx %5.2fx\n", c.method.c_str(), first[0],
                  (long long)batch_later[0], later[0], first[1], (long long)batch_later[1], later[1],
                  first[0] / first[1], later[0] / later[1]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_batch_size: %s\n", e.what());
    std::filesystem::remove_all(cache);
    return 1;
  }
  std::filesystem::remove_all(cache);
  return 0;
}
