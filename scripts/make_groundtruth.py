#!/usr/bin/env python3
"""Ground-truth benchmark generator for Candela's evaluation feature.

Writes three data sets, each with a trained TorchScript model (eval mode), the model's
sidecar JSON (read by candela::Model::load) and test data as .npy:

  patterns/  4-class images: the class is WHICH of 4 planted 6x6 patterns appears at a random
             position among short distractor strokes and noise. masks_test.npy = the planted
             pattern's pixels (the ground-truth explanation region).
  tabular/   10 N(0,1) features, regression target f(x) = 2*x0 + sin(2*x4) + (x7^2 - 1).
             f is additive, so its exact (interventional) Shapley values w.r.t. the background
             set are phi_j = g_j(x_j) - mean_b g_j(b_j): true_shap.npy. model_shap.npy holds the
             exact Shapley values of the trained MLP itself (all 2^10 coalitions).
  shortcut/  2-class images (cross vs square) plus a 3x3 watermark in the top-left corner
             that in training marks 95% of class-1 and 5% of class-0 images, and in test is
             independent of the label.

Usage (from the repo root):
  /usr/bin/python3 scripts/make_groundtruth.py --out build/groundtruth

Seeds are fixed (torch, numpy, PYTHONHASHSEED) and training runs on the CPU with 2 threads,
so reruns on the same machine/torch build are byte-identical.
"""

import os
import sys

# TorchScript writes a module's constants in Python set order, which depends on string hash
# randomisation: re-run with a fixed hash seed so model.pt files are byte-identical across runs.
if __name__ == "__main__" and os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SEED = 20240611
H = W = 32
P = 6  # pattern size

# ---- 6x6 class patterns ----------------------------------------------------------------
_PATTERN_ART = {
    "cross": ["..##..",
              "..##..",
              "######",
              "######",
              "..##..",
              "..##.."],
    "square": ["######",
               "#....#",
               "#....#",
               "#....#",
               "#....#",
               "######"],
    "diagonal": ["##....",
                 "###...",
                 ".###..",
                 "..###.",
                 "...###",
                 "....##"],
    "circle": [".####.",
               "##..##",
               "#....#",
               "#....#",
               "##..##",
               ".####."],
}
PATTERNS = {k: np.array([[c == "#" for c in row] for row in v], dtype=bool) for k, v in _PATTERN_ART.items()}

# Watermark for the shortcut set: rows y0..y1-1, columns x0..x1-1 (end-exclusive).
WM = {"y0": 1, "x0": 1, "y1": 4, "x1": 4}
WM_VALUE = 1.0


def make_image(rng, pattern, *, n_strokes, stroke_len, pat_lo, keep_out=None):
    """One 32x32 image with `pattern` planted at a random position.

    Returns (image float32 [32,32] in [0,1], mask bool [32,32] = the pattern's pixels).
    Distractors are short 1-pixel strokes (length <= 3, so they cannot form a class pattern)
    and isolated dots, kept one pixel away from the pattern and out of `keep_out`
    (a (y0, x0, y1, x1) box, used to keep the watermark corner free of strokes).
    """
    img = rng.uniform(0.0, 0.15, size=(H, W))
    while True:  # with a keep-out box, the pattern stays 2 pixels clear of it
        py = int(rng.integers(0, H - P + 1))
        px = int(rng.integers(0, W - P + 1))
        if keep_out is None:
            break
        y0, x0, y1, x1 = keep_out
        if py >= y1 + 2 or px >= x1 + 2:
            break
    blocked = np.zeros((H, W), dtype=bool)
    blocked[max(py - 1, 0):py + P + 1, max(px - 1, 0):px + P + 1] = True
    if keep_out is not None:
        y0, x0, y1, x1 = keep_out
        blocked[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
    dirs = [(0, 1), (1, 0), (1, 1), (1, -1)]
    for _ in range(n_strokes):
        length = int(rng.integers(stroke_len[0], stroke_len[1] + 1))
        dy, dx = dirs[int(rng.integers(0, 4))]
        y, x = int(rng.integers(0, H)), int(rng.integers(0, W))
        v = rng.uniform(0.4, 1.0)
        for t in range(length):
            yy, xx = y + t * dy, x + t * dx
            if 0 <= yy < H and 0 <= xx < W and not blocked[yy, xx]:
                img[yy, xx] = max(img[yy, xx], v)
    mask = np.zeros((H, W), dtype=bool)
    mask[py:py + P, px:px + P] = pattern
    v = rng.uniform(pat_lo, 1.0)
    img[mask] = v
    return img.astype(np.float32), mask


def make_pattern_set(rng, n, class_names, **kw):
    xs = np.zeros((n, 1, H, W), dtype=np.float32)
    ms = np.zeros((n, H, W), dtype=bool)
    ys = rng.integers(0, len(class_names), size=n).astype(np.int64)
    for i in range(n):
        xs[i, 0], ms[i] = make_image(rng, PATTERNS[class_names[ys[i]]], **kw)
    return xs, ys, ms


def add_watermark(x):
    x = x.copy()
    x[..., WM["y0"]:WM["y1"], WM["x0"]:WM["x1"]] = WM_VALUE
    return x


# ---- models ------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    def __init__(self, n_classes: int, c1: int = 8, c2: int = 16, c3: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c3, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.pool(x)
        x = self.relu3(self.conv3(x))
        return self.fc(self.flatten(self.gap(x)))


class MLP(nn.Module):
    def __init__(self, d_in: int = 10, hidden: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, hidden)
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


def train_classifier(model, x, y, *, epochs, lr, batch, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), batch):
            idx = perm[s:s + batch]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


@torch.no_grad()
def predict(model, x, batch=1000):
    out = [model(torch.from_numpy(x[s:s + batch])) for s in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def gradient(model, x, target):
    """d logit_target / d x -> [N,C,H,W]."""
    xt = torch.from_numpy(x).clone().requires_grad_(True)
    out = model(xt)
    out.gather(1, torch.from_numpy(target).view(-1, 1)).sum().backward()
    return xt.grad.numpy()


def saliency(model, x, target):
    """|d logit_target / d x| summed over channels -> [N,H,W]."""
    return np.abs(gradient(model, x, target)).sum(1)


def pointing(attr, region):
    """Fraction of images whose argmax of attr [N,H,W] lies in region [N,H,W]."""
    flat = attr.reshape(len(attr), -1).argmax(1)
    return float(region.reshape(len(attr), -1)[np.arange(len(attr)), flat].mean())


def dilate(m):
    """3x3 binary dilation of masks [N,H,W]."""
    p = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(m)
    for dy in range(3):
        for dx in range(3):
            out |= p[:, dy:dy + m.shape[1], dx:dx + m.shape[2]]
    return out


# ---- output helpers --------------------------------------------------------------------
def rnd(v, nd=6):
    return float(round(float(v), nd))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def save_model(model, example, folder, sidecar):
    model.eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        ref = model(example)
        got = scripted(example)
    assert torch.allclose(ref, got, atol=1e-5), "scripted model disagrees with eager model"
    path = os.path.join(folder, "model.pt")
    scripted.save(path)
    write_json(os.path.join(folder, "model.json"), sidecar)
    return path


def image_sidecar(classes):
    return {"input": {"shape": [1, H, W], "layout": "NCHW", "range": [0, 1]},
            "classes": classes, "output": "logits"}


# ---- set 1: patterns ---------------------------------------------------------------------
def build_patterns(out, log):
    folder = os.path.join(out, "patterns")
    os.makedirs(folder, exist_ok=True)
    classes = ["cross", "square", "diagonal", "circle"]
    rng = np.random.default_rng(SEED + 1)
    gen = dict(n_strokes=int(8), stroke_len=(2, 3), pat_lo=0.6)
    x_tr, y_tr, _ = make_pattern_set(rng, 6000, classes, **gen)
    x_te, y_te, m_te = make_pattern_set(rng, 200, classes, **gen)
    torch.manual_seed(SEED + 1)
    model = SmallCNN(len(classes))
    train_classifier(model, x_tr, y_tr, epochs=8, lr=4e-3, batch=64, seed=SEED + 1)
    train_acc = float((predict(model, x_tr).argmax(1) == y_tr).mean())
    test_acc = float((predict(model, x_te).argmax(1) == y_te).mean())

    grad = gradient(model, x_te, y_te)
    sal = np.abs(grad).sum(1)
    ixg = np.abs(grad * x_te).sum(1)
    hit = pointing(sal, m_te)
    hit_dil = pointing(sal, dilate(m_te))
    hit_ixg = pointing(ixg, m_te)
    share = (sal * m_te).sum((1, 2)) / sal.sum((1, 2))
    area = m_te.mean((1, 2))

    save_model(model, torch.from_numpy(x_te[:4]), folder, image_sidecar(classes))
    np.save(os.path.join(folder, "x_test.npy"), x_te)
    np.save(os.path.join(folder, "y_test.npy"), y_te)
    np.save(os.path.join(folder, "masks_test.npy"), m_te)
    log(f"[patterns] train acc {train_acc:.4f}  test acc {test_acc:.4f}")
    log(f"[patterns] pointing game, target = true class: argmax |saliency| in mask {hit:.3f}, "
        f"in mask dilated by 1 px {hit_dil:.3f}; argmax |input x gradient| in mask {hit_ixg:.3f}")
    log(f"[patterns] |saliency| share in mask {share.mean():.3f} vs mask area share {area.mean():.4f} "
        f"({share.mean() / area.mean():.1f}x)")
    return {
        "task": "4-class image classification; the class is which planted 6x6 pattern appears",
        "classes": classes,
        "input": "x_test.npy float32 [N,1,32,32] in [0,1], NCHW, single channel, no normalisation",
        "n_train": int(len(x_tr)), "n_test": int(len(x_te)),
        "train_accuracy": rnd(train_acc), "test_accuracy": rnd(test_acc),
        "ground_truth": "masks_test.npy bool [N,32,32]: the pixels of the planted pattern (the only "
                        "class evidence). Distractors are 1-pixel strokes of length 2-3 and noise in [0,0.15], "
                        "kept one pixel away from the pattern.",
        "pattern_templates": {k: _PATTERN_ART[k] for k in classes},
        "generator": {"background_noise": [0.0, 0.15], "pattern_value": [gen["pat_lo"], 1.0],
                      "n_strokes": gen["n_strokes"], "stroke_len": list(gen["stroke_len"]),
                      "stroke_value": [0.4, 1.0]},
        "sanity": {"pointing_game_saliency_mask": rnd(hit, 4), "pointing_game_saliency_mask_dilated1": rnd(hit_dil, 4),
                   "pointing_game_input_x_gradient_mask": rnd(hit_ixg, 4),
                   "saliency_share_in_mask": rnd(share.mean(), 4), "mask_area_share": rnd(area.mean(), 4),
                   "method": "plain gradient |d logit[y_true]/dx| (Python autograd)"},
    }


# ---- set 2: tabular ----------------------------------------------------------------------
M_FEAT = 10
REL = [0, 4, 7]


def g_terms(x):
    """Per-feature terms g_j(x_j) [N,10]; zero columns for irrelevant features."""
    g = np.zeros_like(x, dtype=np.float64)
    g[:, 0] = 2.0 * x[:, 0]
    g[:, 4] = np.sin(2.0 * x[:, 4])
    g[:, 7] = x[:, 7] ** 2 - 1.0
    return g


def f_true(x):
    return g_terms(x).sum(1)


def exact_shapley(fn, x, bg):
    """Exact interventional Shapley values of fn w.r.t. the background set bg.

    v(S) = mean_b fn(x_S, b_~S); enumerates all 2^M coalitions. fn maps [R,M] -> [R]."""
    m = x.shape[1]
    coal = np.array(list(itertools.product([0, 1], repeat=m)), dtype=bool)  # [2^M, M]
    sizes = coal.sum(1)
    w = np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) if s < m else 0.0
                  for s in range(m + 1)])
    idx = {tuple(c): i for i, c in enumerate(coal)}
    phi = np.zeros(x.shape, dtype=np.float64)
    for n in range(len(x)):
        rows = np.where(coal[:, None, :], x[n][None, None, :], bg[None, :, :])  # [2^M, B, M]
        v = fn(rows.reshape(-1, m)).reshape(len(coal), len(bg)).mean(1)
        for j in range(m):
            without = np.nonzero(~coal[:, j])[0]
            with_j = coal[without].copy()
            with_j[:, j] = True
            wi = np.array([idx[tuple(c)] for c in with_j])
            phi[n, j] = (w[sizes[without]] * (v[wi] - v[without])).sum()
    return phi


def build_tabular(out, log):
    folder = os.path.join(out, "tabular")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(SEED + 2)
    x_tr = rng.standard_normal((20000, M_FEAT)).astype(np.float32)
    x_te = rng.standard_normal((100, M_FEAT)).astype(np.float32)
    bg = rng.standard_normal((50, M_FEAT)).astype(np.float32)
    y_tr = f_true(x_tr.astype(np.float64)).astype(np.float32)

    torch.manual_seed(SEED + 2)
    model = MLP(M_FEAT, 64)
    g = torch.Generator().manual_seed(SEED + 2)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr).view(-1, 1)
    epochs, batch, lr = 60, 256, 3e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * math.ceil(len(x_tr) / batch))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x_tr), generator=g)
        for s in range(0, len(x_tr), batch):
            i = perm[s:s + batch]
            loss = F.mse_loss(model(xt[i]), yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()

    y_te = f_true(x_te.astype(np.float64))
    p_te = predict(model, x_te)[:, 0].astype(np.float64)
    r2 = 1.0 - ((p_te - y_te) ** 2).sum() / ((y_te - y_te.mean()) ** 2).sum()
    max_err = np.abs(p_te - y_te).max()
    rmse = math.sqrt(((p_te - y_te) ** 2).mean())

    gt = g_terms(x_te.astype(np.float64))
    true_shap = gt - g_terms(bg.astype(np.float64)).mean(0, keepdims=True)

    def model_fn(rows):
        with torch.no_grad():
            return model(torch.from_numpy(rows.astype(np.float32))).numpy()[:, 0].astype(np.float64)

    model_shap = exact_shapley(model_fn, x_te.astype(np.float64), bg.astype(np.float64))
    # self-check: the enumeration on the true function reproduces the closed form
    chk = exact_shapley(f_true, x_te[:5].astype(np.float64), bg.astype(np.float64))
    assert np.abs(chk - true_shap[:5]).max() < 1e-9, "exact Shapley enumeration disagrees with closed form"
    # efficiency: sum phi = f(x) - mean_b f(b)
    eff = np.abs(model_shap.sum(1) - (p_te - model_fn(bg.astype(np.float64)).mean())).max()
    gap = np.abs(model_shap - true_shap)

    names = [f"x{j}" for j in range(M_FEAT)]
    save_model(model, torch.from_numpy(x_te[:4]), folder,
               {"input": {"shape": [M_FEAT], "layout": "NC"}, "classes": ["f"],
                "feature_names": names, "features": names, "output": "regression"})
    np.save(os.path.join(folder, "x_test.npy"), x_te)
    np.save(os.path.join(folder, "y_test.npy"), y_te.astype(np.float32))
    np.save(os.path.join(folder, "background.npy"), bg)
    np.save(os.path.join(folder, "true_shap.npy"), true_shap.astype(np.float32))
    np.save(os.path.join(folder, "model_shap.npy"), model_shap.astype(np.float32))
    # The relevant features as a ground-truth "mask" per row, for localisation metrics.
    relevant = np.zeros(x_te.shape, dtype=bool)
    relevant[:, REL] = True
    np.save(os.path.join(folder, "masks_test.npy"), relevant)
    with open(os.path.join(folder, "feature_names.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    log(f"[tabular] MLP fit on test: R^2 {r2:.5f}  RMSE {rmse:.4f}  max |err| {max_err:.4f}")
    log(f"[tabular] exact model Shapley vs true: mean |diff| {gap.mean():.4f}, max {gap.max():.4f}; "
        f"irrelevant features max |phi_model| {np.abs(model_shap[:, [j for j in range(M_FEAT) if j not in REL]]).max():.4f}; "
        f"efficiency err {eff:.2e}")
    return {
        "task": "regression, model output [N,1] = f(x) (not a classifier; sidecar output = \"regression\")",
        "function": "f(x) = 2*x0 + sin(2*x4) + (x7^2 - 1); x ~ N(0, I_10) independent",
        "relevant_features": [names[j] for j in REL],
        "feature_names": names,
        "n_train": int(len(x_tr)), "n_test": int(len(x_te)), "n_background": int(len(bg)),
        "fit": {"test_r2": rnd(r2), "test_rmse": rnd(rmse), "test_max_abs_err": rnd(max_err)},
        "ground_truth": "true_shap.npy float32 [N,10]: exact interventional Shapley values of the TRUE f "
                        "w.r.t. background.npy: phi_j = g_j(x_j) - mean_b g_j(b_j) (0 for irrelevant features; "
                        "sum_j phi_j = f(x) - mean_b f(b)).",
        "true_shap_model_note": "The MLP approximates f, so its Shapley values only approximate true_shap. "
                                "model_shap.npy holds the exact interventional Shapley values of the trained MLP "
                                "itself w.r.t. background.npy (all 2^10 coalitions enumerated, "
                                "v(S) = mean_b model(x_S, b_notS)); that is the right target for KernelSHAP/"
                                "sampling estimators with --background background.npy.",
        "model_shap_vs_true_shap": {"mean_abs_diff": rnd(gap.mean()), "max_abs_diff": rnd(gap.max())},
        "y_test": "y_test.npy float32 [N]: f(x_test) (the true function, not the model)",
    }


# ---- set 3: shortcut ---------------------------------------------------------------------
# Shortcut strength knobs (tuned so the model leans on the watermark but learns the pattern partly).
# Swept on this seed (train size:epochs): 3000:3 underfits (p ~ 0.5), 3000:5 conflicting acc 0.41,
# 3000:6 conflicting 0.47 / consistent 0.98, 3000:7-10 learns the pattern more (conflicting 0.65-0.71).
SC_NTRAIN, SC_EPOCHS, SC_STROKES, SC_PAT_LO = 3000, 6, 12, 0.4


def build_shortcut(out, log):
    folder = os.path.join(out, "shortcut")
    os.makedirs(folder, exist_ok=True)
    classes = ["cross", "square"]
    rng = np.random.default_rng(SEED + 3)
    keep = (WM["y0"], WM["x0"], WM["y1"], WM["x1"])
    gen = dict(n_strokes=SC_STROKES, stroke_len=(2, 3), pat_lo=SC_PAT_LO, keep_out=keep)
    n_tr = SC_NTRAIN
    x_tr, y_tr, _ = make_pattern_set(rng, n_tr, classes, **gen)
    p_wm = np.where(y_tr == 1, 0.95, 0.05)
    wm_tr = rng.uniform(size=n_tr) < p_wm
    x_tr[wm_tr] = add_watermark(x_tr[wm_tr])

    x_te, y_te, m_te = make_pattern_set(rng, 200, classes, **gen)
    # watermark independent of the label: exactly half of each class
    wm_te = np.zeros(len(y_te), dtype=bool)
    for c in (0, 1):
        idx = np.nonzero(y_te == c)[0]
        wm_te[rng.permutation(idx)[: len(idx) // 2]] = True
    x_clean = x_te.copy()
    x_te[wm_te] = add_watermark(x_te[wm_te])

    torch.manual_seed(SEED + 3)
    model = SmallCNN(2)
    train_classifier(model, x_tr, y_tr, epochs=SC_EPOCHS, lr=3e-3, batch=64, seed=SEED + 3)

    train_acc = float((predict(model, x_tr).argmax(1) == y_tr).mean())
    pred_te = predict(model, x_te).argmax(1)
    test_acc = float((pred_te == y_te).mean())
    x_all_wm, x_no_wm = add_watermark(x_clean), x_clean
    p1_wm = torch.softmax(torch.from_numpy(predict(model, x_all_wm)), 1)[:, 1].numpy()
    p1_no = torch.softmax(torch.from_numpy(predict(model, x_no_wm)), 1)[:, 1].numpy()
    acc_wm = float((predict(model, x_all_wm).argmax(1) == y_te).mean())
    acc_no = float((predict(model, x_no_wm).argmax(1) == y_te).mean())
    consistent = wm_te == (y_te == 1)  # watermark agrees with the training correlation
    acc_cons = float((pred_te[consistent] == y_te[consistent]).mean())
    acc_conf = float((pred_te[~consistent] == y_te[~consistent]).mean())
    delta = p1_wm - p1_no
    flips = float((predict(model, x_all_wm).argmax(1) != predict(model, x_no_wm).argmax(1)).mean())

    wm_mask = np.zeros((H, W), dtype=bool)
    wm_mask[WM["y0"]:WM["y1"], WM["x0"]:WM["x1"]] = True
    top1 = pred_te
    grad = gradient(model, x_te, top1.astype(np.int64))
    sal = np.abs(grad).sum(1)
    ixg = np.abs(grad * x_te).sum(1)
    share_wm = (sal[wm_te] * wm_mask).sum((1, 2)) / sal[wm_te].sum((1, 2))
    share_wm_ixg = (ixg[wm_te] * wm_mask).sum((1, 2)) / ixg[wm_te].sum((1, 2))
    share_pat = (sal * m_te).sum((1, 2)) / sal.sum((1, 2))
    area = wm_mask.mean()

    save_model(model, torch.from_numpy(x_te[:4]), folder, image_sidecar(classes))
    np.save(os.path.join(folder, "x_test.npy"), x_te)
    np.save(os.path.join(folder, "y_test.npy"), y_te)
    np.save(os.path.join(folder, "watermark_test.npy"), wm_te)
    np.save(os.path.join(folder, "masks_test.npy"), m_te)
    write_json(os.path.join(folder, "watermark_region.json"), dict(WM))
    # For `candela refine` (retraining without the shortcut): the training split as trained on,
    # and the test images before the watermark was added. Saves only: no random draw changes,
    # so model.pt and the test arrays stay byte-identical to a build without these files.
    np.save(os.path.join(folder, "x_train.npy"), x_tr)
    np.save(os.path.join(folder, "y_train.npy"), y_tr)
    np.save(os.path.join(folder, "watermark_train.npy"), wm_tr)
    np.save(os.path.join(folder, "x_test_clean.npy"), x_clean)
    log(f"[shortcut] train acc {train_acc:.4f}  test acc {test_acc:.4f} (watermark-consistent {acc_cons:.3f}, "
        f"conflicting {acc_conf:.3f}); all test with wm {acc_wm:.3f}, without wm {acc_no:.3f}")
    log(f"[shortcut] reliance: mean p1(with wm) - p1(without) = {delta.mean():+.3f} "
        f"(mean |.| {np.abs(delta).mean():.3f}, top1 flips {flips:.3f})")
    log(f"[shortcut] |saliency| share inside watermark (top1 target, wm images) {share_wm.mean():.3f} "
        f"vs area share {area:.4f} ({share_wm.mean() / area:.1f}x); |input x gradient| share {share_wm_ixg.mean():.3f}; "
        f"|saliency| share in pattern mask {share_pat.mean():.3f}")
    return {
        "task": "2-class image classification (cross vs square) with a spurious watermark",
        "classes": classes,
        "input": "x_test.npy float32 [N,1,32,32] in [0,1], NCHW, single channel, no normalisation",
        "watermark": {"region": dict(WM), "region_convention": "rows y0..y1-1, columns x0..x1-1 (end-exclusive)",
                      "value": WM_VALUE, "train_rate_class0": 0.05, "train_rate_class1": 0.95,
                      "test": "independent of the label: exactly half of each class carries it"},
        "n_train": int(n_tr), "n_test": int(len(x_te)),
        "train_accuracy": rnd(train_acc), "test_accuracy": rnd(test_acc),
        "test_accuracy_watermark_consistent": rnd(acc_cons),
        "test_accuracy_watermark_conflicting": rnd(acc_conf),
        "test_accuracy_all_with_watermark": rnd(acc_wm),
        "test_accuracy_all_without_watermark": rnd(acc_no),
        "shortcut_reliance": {"mean_delta_p1": rnd(delta.mean()), "mean_abs_delta_p1": rnd(np.abs(delta).mean()),
                              "top1_flip_rate": rnd(flips),
                              "definition": "p1 = softmax prob of class 1 (square); delta = p1(test image with "
                                            "watermark added) - p1(same image without it)"},
        "ground_truth": "watermark_test.npy bool [N]; watermark_region.json; masks_test.npy bool [N,32,32] = "
                        "pattern pixels. A faithful explanation of a watermarked test image should put a large "
                        "share of its mass in the watermark region (the model relies on it).",
        "training_data": "x_train.npy float32 [3000,1,32,32], y_train.npy int64 [3000], watermark_train.npy bool "
                         "[3000]: the split the model was trained on (watermark on 95% of class 1, 5% of class 0); "
                         "x_test_clean.npy: the test images without any watermark (for `candela refine`).",
        "sanity": {"saliency_share_in_watermark": rnd(share_wm.mean(), 4), "watermark_area_share": rnd(area, 4),
                   "input_x_gradient_share_in_watermark": rnd(share_wm_ixg.mean(), 4),
                   "saliency_share_in_pattern_mask": rnd(share_pat.mean(), 4),
                   "method": "plain gradient |d logit[top1]/dx| (Python autograd); watermark shares over the "
                             "test images that carry the watermark, pattern share over all test images"},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/groundtruth", help="output folder")
    ap.add_argument("--only", default="", help="comma list of sets to build (patterns,tabular,shortcut)")
    args = ap.parse_args()

    # CANDELA_FIXTURE_THREADS: scripts/check-portability.sh trains the sets with other thread counts.
    torch.set_num_threads(int(os.environ.get("CANDELA_FIXTURE_THREADS", "2")))
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    sets = {"patterns": build_patterns, "tabular": build_tabular, "shortcut": build_shortcut}
    only = [s for s in args.only.split(",") if s] or list(sets)
    manifest = {
        "generator": "scripts/make_groundtruth.py",
        "seed": SEED, "per_set_seeds": {"patterns": SEED + 1, "tabular": SEED + 2, "shortcut": SEED + 3},
        "torch_version": torch.__version__.split("+")[0], "numpy_version": np.__version__,
        "files": "each set: model.pt (TorchScript, eval) + model.json (Candela sidecar) + test data .npy; "
                 "shortcut also its training split (x_train.npy, y_train.npy, watermark_train.npy) and "
                 "x_test_clean.npy",
        "sets": {},
    }
    for name in only:
        manifest["sets"][name] = sets[name](args.out, log)
    if set(only) == set(sets):
        write_json(os.path.join(args.out, "manifest.json"), manifest)
    log(f"done: wrote {args.out}")


if __name__ == "__main__":
    main()
