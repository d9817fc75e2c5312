"""Reference numbers for DeepLIFT, Guided Grad-CAM and Eigen-Grad-CAM on a CNN with max-pooling, made with
Captum 0.5.0 and pytorch-grad-cam (hand-run; CI only reads its outputs).

Uses the committed lrp_cnn.pt (conv-relu-maxpool-conv-relu-avgpool-linear-relu-linear, 1x12x12 input) and
lrp_cnn_x.npy from make_lrp_reference.py, target class 1, and writes next to this file:

- captum_deeplift_zeros.npy, captum_deeplift_ref.npy: captum.attr.DeepLift (rescale rule; max-pooling by
  Captum's maxpool2d rule) with a zero baseline and with captum_deeplift_ref_baseline.npy (seeded);
- captum_guided_grad_cam.npy: captum.attr.GuidedGradCam(model, model[4]) with its defaults (nearest
  upsampling of the ReLU'd layer Grad-CAM, times guided backpropagation);
- gradcam_eigen_grad_cam_raw.npy: pytorch-grad-cam's get_2d_projection (utils/svd_on_activations.py, the
  function EigenGradCAM calls) of gradient x activation at model[4], the gradients by plain autograd.
  The SVD's sign is arbitrary in both libraries; the test compares up to sign.

tests/unit/test_rules.cpp and tests/unit/test_cam_methods.cpp compare Candela with them. Neither library ships
with Candela. Use Captum 0.5.0: from 0.6.0 on, DeepLift's max-pool rule takes the first row of grad_input where
it means the whole tensor (captum#1276, fixed upstream in 2026 by #1847), so with several inputs its
attributions no longer sum to f(x) - f(ref) (on this net: 0.0847 against 0.0547 for the first input). Captum
0.5.0 runs on Debian's torch 1.13 (it needs matplotlib: apt install python3-matplotlib). pytorch-grad-cam's
svd_on_activations.py needs scikit-learn for an import:

    PYTHONPATH=/path/to/captum-0.5.0 GRADCAM_SVD=/path/to/pytorch_grad_cam/utils/svd_on_activations.py \\
        /usr/bin/python3 tests/reference/make_captum_reference.py
"""
import importlib.util
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

try:
    import captum
    from captum.attr import DeepLift, GuidedGradCam
except ImportError as exc:
    sys.exit(f"make_captum_reference.py needs Captum on PYTHONPATH (see the docstring): {exc}")

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = 1
LAYER = 4  # the ReLU after the second convolution: [N, 8, 6, 6]


def load_model():
    """lrp_cnn.pt's weights in an nn.Sequential (Captum hooks nn.ReLU / nn.MaxPool2d modules)."""
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    traced = torch.jit.load(os.path.join(HERE, "lrp_cnn.pt"))
    model.load_state_dict(traced.state_dict())
    x = torch.from_numpy(np.load(os.path.join(HERE, "lrp_cnn_x.npy")))
    assert torch.allclose(model(x), traced(x)), "lrp_cnn.pt is not the architecture above"
    return model, x


def eigen_grad_cam_raw(model, x):
    path = os.environ.get("GRADCAM_SVD")
    if not path:
        sys.exit("set GRADCAM_SVD to pytorch-grad-cam's pytorch_grad_cam/utils/svd_on_activations.py")
    spec = importlib.util.spec_from_file_location("svd_on_activations", path)
    svd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(svd)
    kept = {}
    handle = model[LAYER].register_forward_hook(lambda m, i, o: kept.__setitem__("a", o))
    out = model(x.clone().requires_grad_())  # the weights are frozen: the graph starts at x
    handle.remove()
    grads = torch.autograd.grad(out[:, TARGET].sum(), kept["a"])[0]
    return svd.get_2d_projection((grads * kept["a"]).detach().numpy())


def main():
    torch.manual_seed(0)
    model, x = load_model()
    for p in model.parameters():
        p.requires_grad_(False)
    ref = (torch.randn(x.shape, generator=torch.Generator().manual_seed(7)) * 0.5).clamp(-1, 1)
    written = {}

    def save(name, tensor):
        arr = tensor.detach().numpy() if torch.is_tensor(tensor) else tensor
        np.save(os.path.join(HERE, name), np.ascontiguousarray(arr, dtype=np.float32))
        written[name] = list(arr.shape)

    save("captum_deeplift_ref_baseline.npy", ref)
    save("captum_deeplift_zeros.npy", DeepLift(model).attribute(x.clone().requires_grad_(), torch.zeros_like(x),
                                                                target=TARGET))
    save("captum_deeplift_ref.npy", DeepLift(model).attribute(x.clone().requires_grad_(), ref, target=TARGET))
    save("captum_guided_grad_cam.npy", GuidedGradCam(model, model[LAYER]).attribute(x.clone().requires_grad_(),
                                                                                     target=TARGET))
    save("gradcam_eigen_grad_cam_raw.npy", eigen_grad_cam_raw(model, x))
    with open(os.path.join(HERE, "captum_reference.json"), "w") as f:
        json.dump({"made_with": {"captum": captum.__version__, "pytorch_grad_cam": "get_2d_projection, "
                                 "utils/svd_on_activations.py"},
                   "torch": torch.__version__, "target": TARGET, "layer": str(LAYER), "files": written}, f, indent=1)
        f.write("\n")
    print("wrote", ", ".join(written))


if __name__ == "__main__":
    main()
