"""The Python package's costs, measured in one run (numbers for the Python issue's note).

1. overhead: `candela.attr` / `candela.explain` from Python against the same explanation called from
   C++ (build/bin/bench_compare) on resnet18: IG 50 steps and Grad-CAM on layer4.
2. captum: Captum and `candela.attr` in the same process on the same model and input (Captum gets
   torchvision's eager resnet18 holding the fixture's weights, as bench/compare does): IG (50),
   NoiseTunnel(Saliency) 10, Occlusion 32/16, KernelShap 200 on a 32x32 grid, DeepLift, LayerGradCam.
3. dask: `candela.dask.explain_dataset` over 2,000 breast-cancer rows (KernelSHAP) and 500 digits (IG)
   on LocalClusters of 1 and 2 workers, against one process explaining the same rows.

Usage (hold the build lock so no compile runs beside it; Captum from a source tree, never committed):
  CAPTUM_SRC=/tmp/captum05 PYTHONPATH=build/python flock /tmp/candela-build.lock \\
      /usr/bin/python3 bench/python/bench_python.py [--parts overhead,captum,dask] [--threads 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, "bench", "compare"))


def best(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def overhead(args, x, xfile):
    import candela
    from candela.attr import IntegratedGradients
    model = torch.jit.load(args.model)
    cases = {
        "ig50": lambda: IntegratedGradients(model).attribute(x, target=3, n_steps=50),
        "grad_cam": lambda: candela.explain(model, x, "grad_cam", target=3, layers=["layer4"]),
    }
    rows = []
    for case, fn in cases.items():
        py, cpp = [], []
        for _ in range(args.rounds):  # alternating: C++ process, Python call
            r = subprocess.run([args.bench_compare, "--case", case, "--model", args.model, "--input", xfile,
                                "--target", "3", "--threads", str(args.threads), "--repeats", str(args.repeats)],
                               capture_output=True, text=True, check=True)
            cpp.append(json.loads(r.stdout.strip().splitlines()[-1])["seconds"])
            py.append(best(fn, args.repeats))
        rows.append((case, min(cpp), min(py), min(py) / min(cpp) - 1))
    print("\n| case | C++ call s | Python call s | Python overhead |\n|---|---|---|---|")
    for case, c, p, o in rows:
        print(f"| {case} | {c:.3f} | {p:.3f} | {o * 100:+.1f}% |")


def captum(args, x):
    src = os.environ.get("CAPTUM_SRC")
    if not src:
        print("\ncaptum: skipped (set CAPTUM_SRC to a Captum 0.5.0 source tree)")
        return
    sys.path.insert(0, src)
    import anchors
    from captum.attr import LayerGradCam as CaptumLayerGradCam
    from candela import attr
    warnings.filterwarnings("ignore")
    scripted = torch.jit.load(args.model).eval()
    eager = anchors.eager_resnet18(scripted)
    deeplift_model = anchors.deeplift_ready(anchors.eager_resnet18(torch.jit.load(args.model).eval()))
    zeros = torch.zeros_like(x)
    mask = anchors.grid_mask(x.shape[-2], x.shape[-1])[None, None]
    cases = [
        ("IntegratedGradients, 50 steps", lambda: anchors.make_case("ig50", "internal_batch_size=10", eager, x, 3),
         lambda: attr.IntegratedGradients(scripted).attribute(x, baselines=zeros, target=3, n_steps=50)),
        ("NoiseTunnel(Saliency), 10 samples", lambda: anchors.make_case("smoothgrad10", "nt_samples_batch_size=None",
                                                                         eager, x, 3),
         lambda: attr.NoiseTunnel(attr.Saliency(scripted)).attribute(x, nt_type="smoothgrad", nt_samples=10,
                                                                      stdevs=1.0, target=3, abs=True)),
        ("Occlusion 32/16", lambda: anchors.make_case("occlusion", "perturbations_per_eval=16", eager, x, 3),
         lambda: attr.Occlusion(scripted).attribute(x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16),
                                                    baselines=0, target=3, perturbations_per_eval=0)),
        ("KernelShap, 200 samples", lambda: anchors.make_case("kernel_shap", "perturbations_per_eval=16", eager, x, 3),
         lambda: attr.KernelShap(scripted).attribute(x, baselines=0, target=3, feature_mask=mask, n_samples=200,
                                                     perturbations_per_eval=0)),
        ("DeepLift", lambda: anchors.make_case("deeplift", "default", deeplift_model, x, 3),
         lambda: attr.DeepLift(scripted).attribute(x, baselines=zeros, target=3)),
        ("LayerGradCam, layer4", lambda: (lambda c: (lambda: c.attribute(x, target=3)))(
            CaptumLayerGradCam(eager, eager.layer4)),
         lambda: attr.LayerGradCam(scripted, "layer4").attribute(x, target=3)),
    ]
    print("\n| method | Captum s | candela.attr s | Captum / candela |\n|---|---|---|---|")
    for name, make_captum, candela_fn in cases:
        captum_fn = make_captum()
        c, k = [], []
        for _ in range(args.rounds):
            c.append(best(captum_fn, args.repeats))
            k.append(best(candela_fn, args.repeats))
        print(f"| {name} | {min(c):.3f} | {min(k):.3f} | {min(c) / min(k):.2f}x |")


def dask_part(args):
    import candela
    from candela.dask import explain_dataset
    from distributed import Client, LocalCluster
    fixtures = os.path.join(os.path.dirname(args.model))
    cancer = np.load(os.path.join(fixtures, "breast_cancer_train.npy")).astype(np.float32)
    cancer = np.concatenate([cancer] * (2000 // len(cancer) + 1))[:2000]
    digits = np.load(os.path.join(fixtures, "digits_test.npy"))
    digits = np.concatenate([digits] * (500 // len(digits) + 1))[:500]
    digits_big = np.concatenate([digits] * 10)
    # Candela's defaults (KernelSHAP: shap's 2M + 2048 coalitions; IG: 50 steps), and a 10x larger IG
    # run to show how the cluster's fixed costs (worker start, first calls, scheduling) amortise.
    jobs = [("KernelSHAP, 2000 breast-cancer rows", os.path.join(fixtures, "breast_cancer_mlp.pt"), cancer,
             "kernel_shap", {}, 250),
            ("IG, 500 digits", os.path.join(fixtures, "digits_cnn.pt"), digits, "integrated_gradients", {}, 125),
            ("IG, 5000 digits", os.path.join(fixtures, "digits_cnn.pt"), digits_big, "integrated_gradients", {},
             500)]
    print("\n| job | one process s | 1 worker s, cold / warm | 2 workers s, cold / warm | overhead, 1 worker, "
          "cold / warm | scaling, 2 workers (warm) |\n|---|---|---|---|---|---|")
    for name, model, data, method, options, shard in jobs:
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        for i in range(0, len(data), shard):  # the same shards, one after another, in this process
            candela.explain(model, torch.from_numpy(data[i:i + shard]), method, target=1, **options)
        single = time.perf_counter() - t0
        times = {}
        for workers in (1, 2):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
            client.run(lambda: __import__("candela"))  # workers start and import before the clock
            for run in ("cold", "warm"):  # fresh workers (model loads, first calls), then the same again
                with tempfile.TemporaryDirectory() as out:
                    t0 = time.perf_counter()
                    explain_dataset(model, data, method, out=out, client=client, labels=1, shard_size=shard,
                                    progress=False, **options)
                    times[workers, run] = time.perf_counter() - t0
            client.close()
            cluster.close()
        c1, w1, c2, w2 = times[1, "cold"], times[1, "warm"], times[2, "cold"], times[2, "warm"]
        print(f"| {name} | {single:.2f} | {c1:.2f} / {w1:.2f} | {c2:.2f} / {w2:.2f} | {c1 / single - 1:+.1%} / "
              f"{w1 / single - 1:+.1%} | {w1 / w2 / 2:.0%} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("Usage")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="overhead,captum,dask")
    p.add_argument("--model", default=os.path.join(SOURCE, "build", "fixtures", "resnet18.pt"))
    p.add_argument("--bench-compare", default=os.path.join(SOURCE, "build", "bin", "bench_compare"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as f:
        np.save(f, x.numpy())
        xfile = f.name
    parts = args.parts.split(",")
    if "overhead" in parts:
        overhead(args, x, xfile)
    if "captum" in parts:
        captum(args, x)
    if "dask" in parts:
        dask_part(args)
    os.unlink(xfile)


if __name__ == "__main__":
    main()
