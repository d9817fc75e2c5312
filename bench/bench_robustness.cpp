// Adversarial probes and counterfactuals against the model evaluations they need.
//
// PGD-10 on resnet18 (224x224, seeded random images in [0, 1] through the model's normalisation):
// the attack (10 forward+backward passes) plus the forward pass that predicts the adversarial
// rows, against 11 plain forward+backward passes of the same batch (LibTorch autograd on the
// cross-entropy, weights requiring grad as in the evaluator). The plain passes and the attack are
// timed alternately so both see the same machine load; each keeps its best time.
//   ratio = wall(PGD-10 + prediction) / (11 x forward+backward)      target <= 1.1
// Counterfactuals per second on the breast-cancer MLP (DiCE with its defaults, and Wachter).
//
//   build/bin/bench_robustness [--threads N] [--repeats R] [--rows N]
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <cstring>

#include "bench_util.h"
#include "candela/candela.h"
#include "candela/io/npy.h"

using namespace candela;
using namespace candela::bench;

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv, 3);
  int64_t rows = 4;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) rows = std::atoll(argv[++i]);
  ::setenv("CANDELA_NO_BATCH_MEASURE", "1", 1);

  // ---- PGD-10 on resnet18 ----
  Model model = Model::load(fixture("resnet18.pt"));
  for (auto p : model.module()->parameters()) p.set_requires_grad(true);
  at::manual_seed(0);
  const at::Tensor pixels = at::rand({rows, 3, 224, 224});
  const at::Tensor mean = at::tensor({0.485, 0.456, 0.406}, at::kFloat).view({1, 3, 1, 1});
  const at::Tensor std = at::tensor({0.229, 0.224, 0.225}, at::kFloat).view({1, 3, 1, 1});
  const at::Tensor x = (pixels - mean) / std;
  at::Tensor labels;
  {
    at::NoGradGuard g;
    labels = model.forward(x).argmax(1);
  }
  auto plain_fb = [&] {
    const auto t = Clock::now();
    at::Tensor xi = x.detach().requires_grad_(true);
    at::Tensor loss = at::nll_loss(at::log_softmax(model.forward(xi), 1), labels);
    auto g = torch::autograd::grad({loss}, {xi});
    return since(t);
  };
  EvalOptions eval;
  eval.max_batch_size = rows;
  eval.measure_batch_size = false;
  AttackOptions pgd;  // torchattacks' defaults: eps 8/255, alpha 2/255, 10 steps, random start
  auto attack = [&] {
    const auto t = Clock::now();
    Evaluator ev(model, eval);
    at::Tensor adv = adversarial_attack(ev, x, labels, pgd);
    ev.forward("predict", rows, [&](int64_t b, int64_t e) { return Rows{adv.slice(0, b, e), at::arange(b, e), {}}; },
               [](int64_t, int64_t, const Rows&, const at::Tensor&) {});
    return since(t);
  };
  plain_fb();  // warm-up: allocator, OpenMP team, oneDNN kernels
  attack();
  double best_fb = 1e30, best_attack = 1e30;
  for (int r = 0; r < args.repeats; ++r) {
    best_fb = std::min(best_fb, plain_fb());
    best_attack = std::min(best_attack, attack());
  }
  std::printf("resnet18 224x224, %lld rows, %d threads\n", (long long)rows, args.threads);
  std::printf("  forward+backward (plain autograd)   %8.3f s\n", best_fb);
  std::printf("  PGD-10 + prediction                 %8.3f s\n", best_attack);
  std::printf("  ratio wall / (11 x f+b)             %8.3f   (target <= 1.1)\n", best_attack / (11 * best_fb));

  // ---- counterfactuals per second on the MLP ----
  Model mlp = Model::load(fixture("breast_cancer_mlp.pt"));
  const at::Tensor xt = read_npy(fixture("breast_cancer_test.npy")).to(at::kFloat).slice(0, 0, 32);
  const at::Tensor bg = read_npy(fixture("breast_cancer_train.npy")).to(at::kFloat);
  at::Tensor target;
  {
    at::NoGradGuard g;
    target = 1 - mlp.forward(xt).argmax(1);
  }
  EvalOptions mlp_eval;
  mlp_eval.measure_batch_size = false;
  for (const char* method : {"dice", "wachter"}) {
    CounterfactualOptions o;
    o.method = method;
    double best = 1e30;
    double validity = 0;
    int64_t iterations = 0;
    for (int r = 0; r < args.repeats; ++r) {
      const auto t = Clock::now();
      CounterfactualResult res = counterfactuals(mlp, xt, bg, target, {}, o, mlp_eval);
      best = std::min(best, since(t));
      validity = res.valid.to(at::kDouble).mean().item<double>();
      iterations = res.report["iterations"].get<int64_t>();
    }
    const double n = static_cast<double>(xt.size(0) * o.count);
    std::printf("breast-cancer MLP, %s: %lld rows x %lld counterfactuals in %.3f s: %.1f counterfactuals/s "
                "(validity %.3f, %lld iterations)\n",
                method, (long long)xt.size(0), (long long)o.count, best, n / best, validity, (long long)iterations);
  }
  return 0;
}
