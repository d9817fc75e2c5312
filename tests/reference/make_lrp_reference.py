"""Reference numbers for LRP on a multi-layer network, made with zennit (hand-run; CI only reads its outputs).

Writes, next to this file: lrp_cnn.pt (a traced conv-relu-maxpool-conv-relu-avgpool-linear-relu-linear net,
1x12x12 input, seeded weights), lrp_cnn_x.npy (3 inputs in [-2.9, 2.9]) and lrp_cnn_<composite>.npy for zennit's
EpsilonPlus, EpsilonPlusFlat, EpsilonGammaBox(low=-3, high=3), EpsilonAlpha2Beta1 and EpsilonAlpha2Beta1Flat with
their default parameters, attr_output = one_hot(target 1). tests/unit/test_rules.cpp compares Candela's `lrp` with
them. zennit is not shipped with Candela: put its source tree on PYTHONPATH. zennit 1.0.0 needs torch >= 2.1; with
Debian's torch 1.13 use zennit 0.5.1 (same rules and composites):

    PYTHONPATH=/path/to/zennit-0.5.1/src /usr/bin/python3 tests/reference/make_lrp_reference.py
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

try:
    import zennit
    from zennit.attribution import Gradient
    from zennit.composites import (EpsilonAlpha2Beta1, EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlus,
                                   EpsilonPlusFlat)
except ImportError as exc:
    sys.exit(f"make_lrp_reference.py needs zennit on PYTHONPATH (see the docstring): {exc}")

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = 1


def main():
    torch.manual_seed(1234)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = (torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(99)) * 1.5).clamp(-2.9, 2.9)
    traced = torch.jit.trace(model, x)
    traced.save(os.path.join(HERE, "lrp_cnn.pt"))
    np.save(os.path.join(HERE, "lrp_cnn_x.npy"), x.numpy())
    composites = {
        "epsilon_plus": EpsilonPlus(),
        "epsilon_plus_flat": EpsilonPlusFlat(),
        "epsilon_gamma_box": EpsilonGammaBox(low=-3.0, high=3.0),
        "epsilon_alpha2_beta1": EpsilonAlpha2Beta1(),
        "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat(),
    }
    one_hot = torch.eye(3)[[TARGET] * x.shape[0]]
    sums = {}
    for name, composite in composites.items():
        with Gradient(model=model, composite=composite) as attributor:
            _, relevance = attributor(x.clone().requires_grad_(True), one_hot)
        np.save(os.path.join(HERE, "lrp_cnn_%s.npy" % name), relevance.detach().numpy())
        sums[name] = relevance.sum((1, 2, 3)).tolist()
    with open(os.path.join(HERE, "lrp_cnn.json"), "w") as f:
        json.dump({"made_with": "zennit " + getattr(zennit, "__version__", "0.5.1 (it has no __version__)"),
                   "torch": torch.__version__, "target": TARGET, "low": -3.0, "high": 3.0, "relevance_sums": sums},
                  f, indent=1)
    print("wrote lrp_cnn.pt, lrp_cnn_x.npy and %d reference attributions to %s" % (len(composites), HERE))


if __name__ == "__main__":
    main()
