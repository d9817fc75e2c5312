#!/usr/bin/env python3
"""The demo's data and models: 64x64 pictures of coloured shapes on textured backgrounds (four
classes a newcomer recognises at a glance), a small CNN trained on them, the breast-cancer
MLP for tabular data and the text fixtures' BERT-like sentiment model. Seeded; about a minute on 2 cores. Run by `make demo`:

    /usr/bin/python3 scripts/make_demo.py --fixtures build/fixtures --out build/demo

Writes OUT/models/{shapes_cnn.pt,.json, breast_cancer_mlp.pt,.json, text_bert.pt,.json + its vocabulary}
and OUT/data/ with
shapes/<class>/<n>.png (the class is the folder: the web UI reads it as the true class),
x_shapes.npy / y_shapes.npy / masks_shapes.npy (a test set with the shapes' pixels as ground
truth for `candela evaluate`), the breast-cancer test rows, and reviews.txt (one text per line) with
reviews_labels.npy.
"""
import argparse
import json
import math
import os
import shutil
import time

import numpy as np
import torch
from PIL import Image

CLASSES = ["circle", "square", "triangle", "cross"]
SIZE = 64
MEAN, STD = 0.5, 0.25  # the model sees (x - 0.5) / 0.25; the sidecar says so


def shape_mask(kind, cx, cy, r, rng):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if kind == "triangle":  # pointing up
        h = r * 1.7
        top = cy - h / 2
        inside_y = (yy >= top) & (yy <= top + h)
        half = (yy - top) / h * r
        return inside_y & (np.abs(dx) <= half)
    w = r * 0.35  # cross
    return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))


def background(rng):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    base = rng.uniform(0.2, 0.8, size=3).astype(np.float32)
    angle = rng.uniform(0, math.pi)
    freq = rng.uniform(0.15, 0.5)
    stripes = 0.12 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    noise = rng.normal(0, 0.06, size=(SIZE, SIZE, 3)).astype(np.float32)
    return np.clip(base[None, None, :] + stripes[:, :, None] + noise, 0, 1)


def sample(rng, label):
    img = background(rng)
    r = rng.uniform(9, 16)
    cx, cy = rng.uniform(r + 2, SIZE - r - 2, size=2)
    m = shape_mask(CLASSES[label], cx, cy, r, rng)
    colour = rng.uniform(0, 1, size=3).astype(np.float32)
    # Keep the shape visible: push its colour away from the background's mean.
    bg = img[m].mean(axis=0) if m.any() else img.mean(axis=(0, 1))
    if np.abs(colour - bg).sum() < 0.6:
        colour = 1.0 - bg
    img[m] = colour
    return img, m


def make_set(rng, n):
    xs, ys, ms = [], [], []
    for i in range(n):
        y = i % len(CLASSES)
        x, m = sample(rng, y)
        xs.append(x.transpose(2, 0, 1))
        ys.append(y)
        ms.append(m)
    return np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64), np.stack(ms)


class ShapesCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        c = torch.nn
        self.features = c.Sequential(
            c.Conv2d(3, 16, 3, padding=1), c.ReLU(), c.MaxPool2d(2),
            c.Conv2d(16, 32, 3, padding=1), c.ReLU(), c.MaxPool2d(2),
            c.Conv2d(32, 48, 3, padding=1), c.ReLU(), c.MaxPool2d(2),
            c.Conv2d(48, 64, 3, padding=1), c.ReLU(),
        )
        self.pool = c.AdaptiveMaxPool2d(1)
        self.classifier = c.Linear(64, len(CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", required=True, help="the build's fixtures folder (for the breast-cancer MLP and the text model)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261205)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(a.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rng = np.random.default_rng(a.seed)
    xtr, ytr, _ = make_set(rng, a.train)
    xte, yte, mte = make_set(rng, 200)

    model = ShapesCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X, Y = (torch.from_numpy(xtr) - MEAN) / STD, torch.from_numpy(ytr)
    for epoch in range(a.epochs):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[idx]), Y[idx])
            loss.backward()
            opt.step()
        print(f"make_demo: epoch {epoch + 1}/{a.epochs}, loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        acc = (model((torch.from_numpy(xte) - MEAN) / STD).argmax(1).numpy() == yte).mean()

    tmp = a.out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    models, data = os.path.join(tmp, "models"), os.path.join(tmp, "data")
    os.makedirs(models)
    os.makedirs(data)
    torch.jit.trace(model, torch.zeros(1, 3, SIZE, SIZE)).save(os.path.join(models, "shapes_cnn.pt"))
    sidecar = {"input": {"shape": [3, SIZE, SIZE], "layout": "NCHW", "mean": [MEAN] * 3, "std": [STD] * 3,
                         "range": [0.0, 1.0]}, "output": "logits", "classes": CLASSES}
    json.dump(sidecar, open(os.path.join(models, "shapes_cnn.json"), "w"), indent=2)
    for f in ["breast_cancer_mlp.pt", "breast_cancer_mlp.json"]:
        shutil.copy(os.path.join(a.fixtures, f), os.path.join(models, f))
    for f in ["breast_cancer_test.npy", "breast_cancer_test_labels.npy"]:
        shutil.copy(os.path.join(a.fixtures, f), os.path.join(data, f))
    # The text model (tests/fixtures/make_text_fixtures.py: a small BERT-like sentiment classifier
    # with its WordPiece vocabulary) and 24 of its test reviews, one per line, with their labels.
    for f in ["text_bert.pt", "text_bert.json", "text_bert_vocab.txt"]:
        shutil.copy(os.path.join(a.fixtures, f), os.path.join(models, f))
    reviews = open(os.path.join(a.fixtures, "text_test_lines.txt")).read().splitlines()[:24]
    with open(os.path.join(data, "reviews.txt"), "w") as f:
        f.write("\n".join(reviews) + "\n")
    np.save(os.path.join(data, "reviews_labels.npy"), np.load(os.path.join(a.fixtures, "text_test_labels.npy"))[:24])
    for c in CLASSES:
        os.makedirs(os.path.join(data, "shapes", c))
    for i in range(40):
        img = (xte[i].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(img).save(os.path.join(data, "shapes", CLASSES[yte[i]], f"{i:03d}.png"))
    np.save(os.path.join(data, "x_shapes.npy"), xte)
    np.save(os.path.join(data, "y_shapes.npy"), yte)
    np.save(os.path.join(data, "masks_shapes.npy"), mte)
    json.dump({"generator": "scripts/make_demo.py", "seed": a.seed, "classes": CLASSES, "train": a.train,
               "test_accuracy": float(acc), "seconds": round(time.time() - t0, 1)},
              open(os.path.join(tmp, "manifest.json"), "w"), indent=2)
    shutil.rmtree(a.out, ignore_errors=True)
    os.rename(tmp, a.out)
    print(f"make_demo: shapes CNN test accuracy {acc:.3f}, {time.time() - t0:.0f} s -> {a.out}")


if __name__ == "__main__":
    main()
