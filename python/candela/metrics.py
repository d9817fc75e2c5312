"""Candela's evaluation metrics from Python, one function per registered metric (Quantus's
names where it has them): ``candela.metrics.deletion(model, x, attributions, target=3)``.

Each returns one score per sample as a tensor [N]; ``details=True`` returns (scores, details)
with what the metric computed on the way (curves, per-step scores). Metrics that explain again
(robustness, randomisation) need ``method=`` (and ``method_options=``); localisation metrics need
``masks=`` (nonzero = relevant).
"""
import json

import torch

from . import _candela, _core

__all__ = ["score"]


def score(metric, model, inputs, attributions, target=None, masks=None, method=None, method_options=None,
          baselines=None, max_memory=None, batch_size=0, details=False, **options):
    """One metric (see ``candela.metrics_list()``) on the attributions of ``inputs``."""
    info = _core.metric_info(metric)  # an unknown name raises ValueError with the closest names
    x = _core.as_tensor(inputs)
    a = _core.as_tensor(attributions, "attributions")
    em = _core._engine_model(model, x)
    if target is None:
        targets = _candela.predict(em, x).argmax(1)
    else:
        t = target.tolist() if isinstance(target, torch.Tensor) else target
        targets = torch.as_tensor([int(t)] * x.shape[0] if isinstance(t, int) else list(t), dtype=torch.int64)
    if targets.numel() != x.shape[0]:
        raise ValueError(f"target gives {targets.numel()} classes for {x.shape[0]} samples; give one per sample.")
    kind, value = _core.baseline_args(baselines, method or "")
    m = None if masks is None else _core.as_tensor(masks, "masks")
    if max_memory is None:
        max_memory = json.loads(_candela.default_eval())["max_memory_mb"]
    raw = _candela.score_metric(em, info["name"], json.dumps(_core._jsonable(options)), x, a, targets.long(), m,
                                method or "", json.dumps(_core._jsonable(method_options or {})), kind, value,
                                float(max_memory), int(batch_size or 0))
    if details:
        return raw["scores"], json.loads(raw["details"])
    return raw["scores"]


def _make(name, doc):
    def f(model, inputs, attributions, target=None, **kwargs):
        return score(name, model, inputs, attributions, target, **kwargs)
    f.__name__ = name
    f.__doc__ = doc
    return f


for _m in _core.metrics_list():
    _opts = "\n".join(f"    {k} (default {v.get('default')!r}): {v.get('description', '')}"
                      for k, v in sorted(_m.get("options", {}).items()))
    globals()[_m["name"]] = _make(_m["name"], f"{_m['description']}\n\n{_m.get('reference', '')}"
                                  f"\n\nHigher is better: {_m.get('higher_is_better')}.\nOptions:\n{_opts}")
    __all__.append(_m["name"])
