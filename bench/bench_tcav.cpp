// TCAV on resnet18: one concept of --images images against --random-sets random sets of as many
// images (the issue: 50 and 50), the time of the whole experiment, then a second concept with the
// activation cache warm (the random sets' activations are read back, keyed by content) against
// the same second concept without a cache.
//
//   build/bin/bench_tcav [--threads N] [--images 50] [--random-sets 50] [--size 224] [--layer layer3]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "bench_util.h"
#include "candela/candela.h"

using namespace candela;
using candela::bench::Clock;
using candela::bench::since;

int main(int argc, char** argv) {
  const char* usage =
      "usage: bench_tcav [--threads N] [--images N] [--random-sets K] [--size PX] [--layer L] [--inputs N]\n"
      "TCAV on the resnet18 fixture: a first concept (cold activation cache), a second concept (warm cache: the\n"
      "random sets' activations are reused) and the second concept without a cache.\n\n"
      "example:\n  bench_tcav --threads 2 --images 50 --random-sets 50 --size 224\n";
  const auto args = candela::bench::parse_args(argc, argv, 1, usage);
  int64_t images = 50, random_sets = 50, size = 224, inputs_n = 20;
  std::string layer = "layer3";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--images") && i + 1 < argc) images = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--random-sets") && i + 1 < argc) random_sets = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--size") && i + 1 < argc) size = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--layer") && i + 1 < argc) layer = argv[++i];
    else if (!std::strcmp(argv[i], "--inputs") && i + 1 < argc) inputs_n = std::atoll(argv[++i]);
  }
  try {
    Model m = Model::load(candela::bench::fixture("resnet18.pt"));
    at::Generator gen = at::detail::createCPUGenerator(0);
    // Concepts: vertical and horizontal stripes with noise; random sets: uniform noise.
    auto stripes = [&](bool vertical) {
      at::Tensor t = at::arange(size, at::kFloat).div(4).floor().remainder(2);
      t = vertical ? t.reshape({1, 1, 1, size}) : t.reshape({1, 1, size, 1});
      return (t.expand({images, 3, size, size}) + 0.2 * at::randn({images, 3, size, size}, gen)).contiguous();
    };
    std::vector<ConceptSet> a = {{"vertical", stripes(true)}}, b = {{"horizontal", stripes(false)}};
    std::vector<ConceptSet> randoms;
    for (int64_t i = 0; i < random_sets; ++i)
      randoms.push_back({"random_" + std::to_string(i), at::rand({images, 3, size, size}, gen) * 2 - 1});
    at::Tensor inputs = at::rand({inputs_n, 3, size, size}, gen) * 2 - 1;
    const std::string dir = (std::filesystem::temp_directory_path() / "candela-bench-tcav").string();
    std::filesystem::remove_all(dir);
    TcavOptions o;
    ActivationCache cache(dir);
    auto t = Clock::now();
    nlohmann::json first = tcav(m, layer, inputs, 0, a, randoms, o, cache);
    const double cold = since(t);
    t = Clock::now();
    nlohmann::json second = tcav(m, layer, inputs, 0, b, randoms, o, cache);
    const double warm = since(t);
    ActivationCache none("");
    t = Clock::now();
    tcav(m, layer, inputs, 0, b, randoms, o, none);
    const double uncached = since(t);
    std::filesystem::remove_all(dir);
    std::printf("bench_tcav: %d threads, resnet18 at %lld px, %s, %lld images per set, %lld random sets, %lld inputs\n",
                args.threads, (long long)size, layer.c_str(), (long long)images, (long long)random_sets,
                (long long)inputs_n);
    std::printf("first concept, cold cache:         %8.2f s  (sign_count %.3f, p %.2e)\n", cold,
                first["concepts"][0]["sign_count"]["mean"].get<double>(), first["concepts"][0]["p_value"].get<double>());
    std::printf("second concept, warm cache:        %8.2f s  (%lld activation sets read back)\n", warm,
                (long long)second["cache"]["activation_hits"].get<int64_t>());
    std::printf("second concept, no cache:          %8.2f s\n", uncached);
    std::printf("caching speed-up on the second concept: %.2fx\n", uncached / warm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tcav: %s\n", e.what());
    return 1;
  }
  return 0;
}
