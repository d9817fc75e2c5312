"""explain(), the Explanation it returns, and the conversions between Python values and the engine's."""
import base64
import io
import json
import os
import tempfile
import weakref

import numpy as np
import torch

from . import _candela

__all__ = ["explain", "evaluate", "Explanation", "methods", "method_info", "metrics_list", "metric_info", "run_job"]

# Methods whose tensor baseline is a set of reference samples (a distribution), as in Captum; for the
# others (KernelShap and Lime included, as in Captum) a tensor is one baseline, per sample or broadcast.
# shap-style background data: baselines="dist:FILE.npy".
_DISTRIBUTION_BASELINES = {"gradient_shap", "expected_gradients", "deep_lift_shap"}

_methods = None
_metrics = None


def methods():
    """Every registered method: a list of dicts (name, family, description, reference, options, ...)."""
    global _methods
    if _methods is None:
        _methods = json.loads(_candela.methods_json())
    return _methods


def metrics_list():
    """Every registered metric: a list of dicts (name, family, description, options, ...)."""
    global _metrics
    if _metrics is None:
        _metrics = json.loads(_candela.metrics_json())
    return _metrics


def method_info(name):
    """One method's entry; an unknown name raises ValueError with the closest names."""
    return json.loads(_candela.method_json(name))


def metric_info(name):
    """One metric's entry; an unknown name raises ValueError with the closest names."""
    return json.loads(_candela.metric_json(name))


# ------------------------------------------------------------------------------------------- values in
def as_tensor(x, what="inputs"):
    """torch.Tensor from a tensor, numpy array or nested list; other types raise TypeError."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, (list, tuple)):
        t = torch.as_tensor(np.asarray(x))
    else:
        raise TypeError(f"{what} must be a torch.Tensor or a numpy array, got {type(x).__name__}.")
    if t.dtype == torch.float64:
        t = t.float()  # Candela computes in float32, as the models it explains do
    return t.detach().contiguous()


def _layout(inputs):
    per_sample = inputs.dim() - 1
    if per_sample == 3:
        return "NCHW"
    if per_sample == 1:
        return "NL" if not inputs.is_floating_point() else "NC"
    return ""


_models = weakref.WeakKeyDictionary()  # Python model -> engine model (keeps measured batch sizes)
_paths = {}


def _engine_model(model, inputs):
    """The engine's Model for a Python model, made once per model object and kept while it lives."""
    spec = {"shape": list(inputs.shape[1:]), "layout": _layout(inputs)}
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        key = (path, os.path.getmtime(path) if os.path.exists(path) else 0)
        em = _paths.get(key)
        if em is None:
            em = _candela.Model(path, json.dumps(spec))
            _paths[key] = em
        return em
    if isinstance(model, _candela.Model):
        return model
    try:
        em = _models.get(model)
    except TypeError:  # not weak-referenceable: made per call
        em = None
    if em is None:
        name = type(model).__name__
        em = _candela.Model(model, json.dumps(spec), name)
        try:
            _models[model] = em
        except TypeError:
            pass
    current = json.loads(em.spec())
    if current.get("shape") != spec["shape"] or not current.get("layout"):
        current.update(spec)
        em.set_spec(json.dumps(current))
    return em


def target_text(target):
    """Captum's target (None, an int, one int per sample) as the CLI's --target text."""
    if target is None:
        return "top1"
    if isinstance(target, torch.Tensor):
        target = target.tolist()
    if isinstance(target, np.ndarray):
        target = target.tolist()
    if isinstance(target, (bool,)):
        raise TypeError("target must be an int, a list of ints (one per sample), a class name or None.")
    if isinstance(target, (int, np.integer)):
        return str(int(target))
    if isinstance(target, str):
        return target
    if isinstance(target, (list, tuple)):
        if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in target):
            return ",".join(str(int(t)) for t in target)
        if len(target) == 1 and isinstance(target[0], (list, tuple)):
            return "element:" + ",".join(str(int(t)) for t in target[0])
    raise TypeError(f"target must be an int, a list of ints (one per sample), a class name or None; got {target!r}.")


def baseline_args(baselines, method):
    """Captum's baselines (None, a number, a tensor) as (kind, value) for the engine."""
    if baselines is None:
        return "parse", "zeros"
    if isinstance(baselines, str):
        return "parse", baselines
    if isinstance(baselines, (bool,)):
        raise TypeError("baselines must be a number, a tensor, a numpy array or a text such as 'blur:5'.")
    if isinstance(baselines, (int, float, np.floating, np.integer)):
        return "parse", "zeros" if float(baselines) == 0.0 else f"constant:{float(baselines)!r}"
    t = as_tensor(baselines, "baselines")
    if method in _DISTRIBUTION_BASELINES:
        return "distribution", t
    return "tensor", t


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def layer_name(model, layer):
    """A layer given as a module object (Captum's way) or a name, as the engine's dotted name."""
    if isinstance(layer, str):
        return layer
    if isinstance(model, torch.nn.Module):
        for name, m in model.named_modules():
            if m is layer and name:
                return name
    raise ValueError("the layer must be a submodule of the model or its dotted name (e.g. 'layer4' or "
                     "'features.3'); this one is not a submodule of the model.")


def _progress_printer(stage, done, total):
    if total:
        print(f"\r{stage}: {done}/{total} model evaluations", end="\n" if done >= total else "", flush=True)


# ------------------------------------------------------------------------------------------- explain
class Explanation:
    """What one explanation produced: ``values`` (a tensor), the model ``output``, the
    ``convergence_delta`` where the method defines one, ``warnings``, and ``metadata`` (the
    content of the CLI's attribution.json)."""

    def __init__(self, raw, inputs):
        self.values = raw["values"]
        self.output = raw["output"]
        self.convergence_delta = raw["convergence_delta"]
        self.output_change = raw["output_change"]
        self.metadata = json.loads(raw["metadata"])
        self.inputs = inputs

    method = property(lambda self: self.metadata.get("method"))
    options = property(lambda self: self.metadata.get("options", {}))
    targets = property(lambda self: self.metadata.get("targets", []))
    warnings = property(lambda self: self.metadata.get("warnings", []))
    layer = property(lambda self: self.metadata.get("layer", ""))

    def __repr__(self):
        d = "" if self.convergence_delta is None else f", convergence_delta={self.convergence_delta.tolist()}"
        return (f"Explanation(method={self.method!r}, values={tuple(self.values.shape)}, "
                f"targets={self.targets}{d}, warnings={len(self.warnings)})")

    def _map(self, index):
        v = self.values[index].detach().float()
        if v.dim() == 3:  # [C, H, W]: summed over channels, Captum's visualisation default
            v = v.sum(0)
        return v.cpu().numpy()

    def plot(self, index=0, ax=None, cmap="bwr"):
        """The explanation of sample ``index`` as a matplotlib figure (needs matplotlib): a heatmap
        centred at zero for images and maps, a bar chart for tabular rows."""
        import matplotlib
        import matplotlib.pyplot as plt
        if ax is None:
            fig, ax = plt.subplots(figsize=(4, 4))
        else:
            fig = ax.figure
        v = self._map(index)
        title = f"{self.method}, target {self.targets[index] if index < len(self.targets) else ''}"
        if v.ndim == 2:
            m = float(np.abs(v).max()) or 1.0
            im = ax.imshow(v, cmap=cmap, norm=matplotlib.colors.Normalize(-m, m))
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_axis_off()
        else:
            v = v.reshape(-1)
            names = self.metadata.get("feature_names") or [str(i) for i in range(v.size)]
            order = np.argsort(-np.abs(v))[:20][::-1]
            ax.barh([names[i] for i in order], v[order], color=["#c0392b" if v[i] > 0 else "#2e86c1" for i in order])
            ax.set_xlabel("attribution")
        ax.set_title(title)
        return fig

    def _repr_html_(self):
        rows = [("method", self.method), ("values", "×".join(map(str, self.values.shape))),
                ("targets", self.targets)]
        if self.convergence_delta is not None:
            rows.append(("convergence delta", [f"{d:.3g}" for d in self.convergence_delta.tolist()]))
        for w in self.warnings:
            rows.append(("warning", w.get("message", "")))
        html = "<table>" + "".join(f"<tr><th style='text-align:left'>{k}</th><td>{_escape(v)}</td></tr>"
                                   for k, v in rows) + "</table>"
        try:
            import matplotlib
            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
            fig = self.plot()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", bbox_inches="tight")
            plt.close(fig)
            html += f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/>"
        except ImportError:
            pass
        return html


def _escape(v):
    return str(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def explain(model, inputs, method, target=None, baselines=None, feature_mask=None, layers=None,
            max_memory=None, batch_size=0, progress=False, baseline=None, options=None,
            additional_forward_args=None, **more_options):
    """Explains ``model`` at ``inputs`` [N, ...] with the registered ``method`` (see
    :func:`methods`); ``options`` are the method's options by name (``n_steps=32``).

    target: None (top-1), a class index, one index per sample, a class name, or a text as the
        CLI's --target (a language model's 'logprob:10', 'contrast:10:24:23').
    baselines: None (zeros), a number, a tensor broadcastable to the inputs, a set of reference
        samples for the SHAP-style methods, or a text as the CLI's --baseline ('blur:5').
    feature_mask: an integer tensor grouping input elements into features (perturbation methods).
    layers: the layers of layer and CAM methods, as module objects or dotted names.
    progress: True prints the model evaluations done; a callable gets (stage, done, total).
    options: the method's options as a dict, for names that clash with explain's own arguments
        (integrated_gradients' ``method``): ``options={"method": "riemann_trapezoid"}``.
    additional_forward_args: what the model's forward() takes after the inputs (Captum's name): a
        tensor, a tuple of them (in forward()'s order; None keeps a parameter's default) or a dict by
        name, e.g. ``{"attention_mask": mask}``. Each holds one row per sample [N, ...] (the samples
        are then explained one at a time) or one row for all [1, ...]. Needs a TorchScript model.
    """
    options = dict(options or {})
    for key, value in more_options.items():
        if key in options:
            raise ValueError(f"option {key} is given twice (in options= and as a keyword); keep one.")
        options[key] = value
    if baseline is not None:
        if baselines is not None:
            raise ValueError("give either baselines= or baseline=, not both.")
        baselines = baseline
    x = as_tensor(inputs)
    em = _engine_model(model, x)
    if _layout(x) == "NL":
        x = x.float()  # token ids [N, L] (int64 as tokenizers give them): the engine takes them as float32
    forward_args = _forward_args(em, additional_forward_args)
    if layers is not None:
        if not isinstance(layers, (list, tuple)):
            layers = [layers]
        if "layers" in options:
            raise ValueError("give the layers either with layers= or with the layers option, not both.")
        options["layers"] = [layer_name(model, l) for l in layers]
    kind, value = baseline_args(baselines, method)
    mask = None if feature_mask is None else as_tensor(feature_mask, "feature_mask").long()
    if max_memory is None:
        max_memory = json.loads(_candela.default_eval())["max_memory_mb"]
    cb = _progress_printer if progress is True else (progress or None)
    try:
        raw = _candela.explain(em, x, method, json.dumps(_jsonable(options)), target_text(target), kind, value,
                               mask, float(max_memory), int(batch_size or 0), cb, forward_args)
    except (TypeError, ValueError) as e:
        if "TorchScript" in str(e) and not isinstance(model, (str, os.PathLike, torch.jit.ScriptModule)):
            raise type(e)(f"{e} From Python: script or trace the model first (torch.jit.script(model) or "
                          f"torch.jit.trace(model, x)); plain modules are called back, which gives gradients "
                          f"and outputs but not the graph.") from None
        raise
    return Explanation(raw, x)


def _forward_args(em, args):
    """additional_forward_args as (name, tensor) pairs for the engine."""
    if args is None:
        return []
    if isinstance(args, dict):
        items = list(args.items())
    else:
        if not isinstance(args, (tuple, list)):
            args = (args,)
        names = _candela.forward_parameters(em)
        if len(args) > len(names):
            raise ValueError(f"additional_forward_args has {len(args)} values but the model's forward() takes "
                             f"{len(names)} parameters after its input ({', '.join(names) or 'none'}).")
        items = list(zip(names, args))
    out = []
    for name, value in items:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"additional_forward_args: '{name}' must be a tensor (Candela passes tensors only), "
                             f"got {type(value).__name__}.")
        out.append((str(name), value.detach()))
    return out


def predict(model, inputs):
    """The model's output at ``inputs``, computed by the engine (no autograd)."""
    x = as_tensor(inputs)
    return _candela.predict(_engine_model(model, x), x)


# ------------------------------------------------------------------------------------------- jobs
def run_job(kind, **fields):
    """Runs one of the CLI's jobs (explain, evaluate, audit, info, robustness, counterfactual, visualize,
    tcav, crp, craft) from its
    fields (the CLI's flags with underscores; a job's `options` as a dict), as the server's
    request bodies name them; returns its JSON result as a dict. Paths, not tensors."""
    return json.loads(_candela.run_job(kind, json.dumps(_jsonable(fields))))


def evaluate(model, data, methods, metrics, labels=None, masks=None, out=None, **fields):
    """``candela evaluate`` from Python: ``methods`` scored by ``metrics`` over ``data`` (a path, or a
    tensor/array [N, ...]); ``model`` is a path or a ScriptModule. Returns results.json's content
    and writes results.csv, results.json and summary.md into ``out`` (a temporary folder if None)."""
    with tempfile.TemporaryDirectory(prefix="candela-") as tmp:
        def to_file(value, name):
            if value is None or isinstance(value, (str, os.PathLike)):
                return None if value is None else os.fspath(value)
            path = os.path.join(tmp, name + ".npy")
            np.save(path, as_tensor(value, name).cpu().numpy())
            return path
        if isinstance(model, torch.jit.ScriptModule):
            path = os.path.join(tmp, "model.pt")
            model.save(path)
            model = path
        elif not isinstance(model, (str, os.PathLike)):
            raise TypeError("evaluate needs a model file or a torch.jit.ScriptModule (script or trace the model).")
        job = dict(model=os.fspath(model), data=to_file(data, "data"), methods=list(methods), metrics=list(metrics),
                   out=os.fspath(out) if out is not None else os.path.join(tmp, "out"), **fields)
        if labels is not None:
            job["labels"] = to_file(labels, "labels")
        if masks is not None:
            job["masks"] = to_file(masks, "masks")
        return run_job("evaluate", **job)
