"""Cheaper resnet18 graphs, measured in Debian's torch (the note on issue 13): is any of them both
faster and exact enough to replace the plain graph?

  gradient: forward+backward to the input, batch 10, plain vs BatchNorm folded (torch.jit.freeze) vs
            channels-last; speed and how far the input gradients move (max |diff| / max |grad|).
  forward:  no-grad forward per row at batch 1..32 for optimize_for_inference, frozen and plain.
  threads:  2 intra-op threads vs 2 worker threads of 1 intra-op thread each (optimised graph).

Usage: flock /tmp/candela-build.lock /usr/bin/python3 bench/python/graph_variants.py [--model build/fixtures/resnet18.pt]
"""
import argparse
import threading
import time

import torch


def timed(fn, repeats=3):
    fn()
    best = 1e9
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def input_grad(model, x, channels_last=False):
    x = x.clone()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    return torch.autograd.grad(model(x)[:, 3].sum(), x)[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="build/fixtures/resnet18.pt")
    a = p.parse_args()
    torch.set_num_threads(2)
    torch._C._jit_set_profiling_executor(False)  # as the CLI runs TorchScript
    load = lambda: torch.jit.load(a.model).eval()
    plain = load()
    for q in plain.parameters():
        q.requires_grad_(False)
    frozen = torch.jit.freeze(load())
    cl = load().to(memory_format=torch.channels_last)
    for q in cl.parameters():
        q.requires_grad_(False)
    x = torch.rand(10, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    x = x * torch.linspace(0, 1, 10).view(10, 1, 1, 1)
    g0 = input_grad(plain, x)
    print("gradient, batch 10: seconds, max|diff|/max|grad|, elements over 1e-6 of max")
    for name, m, c in [("plain", plain, False), ("frozen (BatchNorm folded)", frozen, False),
                       ("channels-last", cl, True)]:
        t = timed(lambda: input_grad(m, x, c))
        d = (input_grad(m, x, c) - g0).abs()
        print(f"  {name:28s} {t:.3f} s  {float(d.max() / g0.abs().max()):.2e}  "
              f"{int((d > 1e-6 * g0.abs().max()).sum())} of {g0.numel()}")
    opt = torch.jit.optimize_for_inference(torch.jit.freeze(load()))
    xs = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    print("forward, no grad: ms per row")
    with torch.no_grad():
        for name, m in [("optimize_for_inference", opt), ("frozen", frozen), ("plain", plain)]:
            print(f"  {name:24s}" + "".join(f"  b{b}: {timed(lambda: m(xs[:b])) / b * 1e3:.1f}"
                                            for b in (1, 4, 8, 16, 32)))
    print("threads, optimised graph, batch 8: ms per row")
    with torch.no_grad():
        print(f"  2 intra-op threads            {timed(lambda: opt(xs[:8])) / 8 * 1e3:.1f}")

        def work():
            torch.set_num_threads(1)
            with torch.no_grad():
                for _ in range(6):
                    opt(xs[:8])
        ts = [threading.Thread(target=work) for _ in range(2)]
        t = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        print(f"  2 workers x 1 thread          {(time.perf_counter() - t) / (2 * 6 * 8) * 1e3:.1f}")


if __name__ == "__main__":
    main()
