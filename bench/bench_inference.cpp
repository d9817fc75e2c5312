// Forward-only evaluation through Model::forward_inference's optimised graph (frozen, BatchNorm
// folded, oneDNN: torch.jit.freeze + optimize_for_inference) against the plain TorchScript
// forward, in one run, alternating (CANDELA_NO_INFERENCE_GRAPH=1 switches the graph off), on
// resnet18 224x224, one image: the forward passes alone at several batch sizes, then the
// forward-only methods end to end; then occlusion and feature ablation with local re-evaluation
// (Model::forward_local) against the optimised graph alone (CANDELA_NO_LOCAL_FORWARD=1). Prints
// the best of `repeats` runs of each and the ratio.
//
//   build/bin/bench_inference [--threads N] [--repeats R]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "bench_util.h"
#include "candela/candela.h"

using namespace candela;
using candela::bench::Clock;
using candela::bench::since;

namespace {


// Best wall time of `repeats` calls of f with the switch `off_variable` set and unset, alternating.
template <class F>
std::pair<double, double> alternate(int repeats, F f, const char* off_variable = "CANDELA_NO_INFERENCE_GRAPH") {
  double off = 1e30, on = 1e30;
  for (int i = 0; i < repeats; ++i) {
    for (bool graph : {false, true}) {
      candela::bench::switch_off(off_variable, !graph);
      auto t = Clock::now();
      f();
      (graph ? on : off) = std::min(graph ? on : off, since(t));
    }
  }
  candela::bench::switch_off(off_variable, false);
  return {off, on};
}

}  // namespace

int main(int argc, char** argv) {
  const auto args = candela::bench::parse_args(argc, argv);
  const int threads = args.threads;
  const int repeats = args.repeats;
  try {
    Model m = Model::load(candela::bench::fixture("resnet18.pt"));
    const at::Tensor x = at::randn({1, 3, 224, 224}, at::detail::createCPUGenerator(0));
    std::printf("bench_inference: %d threads, resnet18 224x224, best of %d, alternating\n", threads, repeats);
    std::printf("%-34s %10s %10s %8s\n", "", "plain, s", "graph, s", "ratio");
    for (int64_t b : {1, 8, 32}) {
      const at::Tensor xb = x.expand({b, 3, 224, 224}).contiguous();
      m.forward_inference(xb);  // builds and checks the graph once
      auto [off, on] = alternate(repeats, [&] { m.forward_inference(xb); });
      std::printf("forward, batch %-19lld %10.4f %10.4f %7.2fx\n", (long long)b, off, on, off / on);
    }
    const nlohmann::json layer4 = {{"layers", {"layer4"}}};
    const std::vector<std::pair<std::string, nlohmann::json>> methods = {
        {"occlusion", {{"sliding_window_shapes", {3, 32, 32}}, {"strides", {3, 16, 16}}}},
        {"score_cam", layer4},
        {"rise", {{"n_masks", 256}}},
        {"lime", {{"num_samples", 100}}},
        {"feature_ablation", nlohmann::json::object()}};
    candela::bench::switch_off("CANDELA_NO_LOCAL_FORWARD", true);  // the optimised graph alone first
    for (const auto& [name, options] : methods) {
      auto e = Registry::builtin().create(name, options);
      ExplainRequest r;
      r.inputs = x;
      r.target = Target::index(3);
      if (name == "lime" || name == "feature_ablation") r.feature_mask = make_feature_mask("grid:32", x, m.input_spec());
      Attribution a;
      auto [off, on] = alternate(repeats, [&] { a = e->explain(m, r); });
      std::printf("%-34s %10.3f %10.3f %7.2fx  (%lld evaluations)\n", name.c_str(), off, on, off / on,
                  (long long)a.model_evaluations);
    }
    candela::bench::switch_off("CANDELA_NO_LOCAL_FORWARD", false);
    std::printf("%-34s %10s %10s %8s\n", "", "graph, s", "local, s", "ratio");
    for (const auto& [name, options] : {methods[0], methods[4]}) {
      auto e = Registry::builtin().create(name, options);
      ExplainRequest r;
      r.inputs = x;
      r.target = Target::index(3);
      if (name == "feature_ablation") r.feature_mask = make_feature_mask("grid:32", x, m.input_spec());
      Attribution a;
      auto [off, on] = alternate(repeats, [&] { a = e->explain(m, r); }, "CANDELA_NO_LOCAL_FORWARD");
      std::printf("%-34s %10.3f %10.3f %7.2fx  (%lld evaluations)\n", name.c_str(), off, on, off / on,
                  (long long)a.model_evaluations);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_inference: %s\n", e.what());
    return 1;
  }
  return 0;
}
