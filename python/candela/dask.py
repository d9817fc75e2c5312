"""Data sets explained on a Dask cluster: one task per shard, one result file per shard, resumable.

    from candela.dask import explain_dataset
    explain_dataset("resnet18.pt", "images/", "integrated_gradients", out="ig/", n_steps=32)

``data`` is a ``.npy`` array [N, ...] (split into shards of ``shard_size`` rows, read by each worker
through a memory map), a folder of ``.npy`` files (one shard each), a folder of images (loaded with
the model's input spec, as the CLI does), a ``.csv`` file, or an in-memory tensor/array.

Each shard's attributions go to ``out/shard-NNNNN.npy`` and its facts (rows, targets, convergence
deltas, warnings) to ``out/shard-NNNNN.json``, each written to a temporary name and renamed, the
JSON last: a shard is finished exactly when its JSON exists. A rerun with the same settings skips
finished shards; ``out/manifest.json`` records the settings, and a rerun with other settings is
refused rather than mixed. A worker killed mid-shard loses nothing: the scheduler runs the shard
again elsewhere, and the rename makes the second write replace nothing half-written.

``client`` is a ``distributed.Client``, a scheduler address (``"tcp://host:8786"``), or None for a
``LocalCluster`` on this machine (``n_workers`` processes of ``threads_per_worker`` threads).
"""
import glob
import hashlib
import io
import json
import os
import tempfile
import time

import numpy as np
import torch

__all__ = ["explain_dataset", "evaluate_dataset", "plan_shards"]

_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


# ------------------------------------------------------------------------------------------- shards
def plan_shards(data, shard_size=64):
    """The shards of ``data`` as small picklable descriptions (the rows stay where they are)."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data
        return [("array", arr[i:i + shard_size]) for i in range(0, len(arr), shard_size)]
    path = os.fspath(data)
    if os.path.isdir(path):
        npys = sorted(glob.glob(os.path.join(path, "*.npy")))
        if npys:
            return [("npy", p, None, None) for p in npys]
        images = sorted(p for p in glob.glob(os.path.join(path, "*")) if p.lower().endswith(_IMAGE_EXT))
        if not images:
            raise ValueError(f"{path} holds no .npy files and no images (png, jpg, ...): nothing to explain.")
        return [("images", images[i:i + shard_size]) for i in range(0, len(images), shard_size)]
    if path.endswith(".npy"):
        n = np.load(path, mmap_mode="r").shape[0]
        return [("npy", path, i, min(i + shard_size, n)) for i in range(0, n, shard_size)]
    if path.endswith(".csv"):
        return [("csv", path, None, None)]  # split after the engine has read it (header, names)
    raise ValueError(f"data must be a .npy or .csv file, a folder of .npy files or images, or a tensor; got {path}.")


def _load_shard(shard, model):
    from . import _candela
    kind = shard[0]
    if kind == "array":
        return torch.from_numpy(np.ascontiguousarray(shard[1]))
    if kind == "npy":
        a = np.load(shard[1], mmap_mode="r")
        if shard[2] is not None:
            a = a[shard[2]:shard[3]]
        return torch.from_numpy(np.ascontiguousarray(a))
    if kind == "images":
        em = _spec_model(model, "a folder of images")
        return torch.cat([_candela.load_input(em, p) for p in shard[1]])
    raise ValueError(f"unknown shard kind {kind}")


_worker_models = {}


def _spec_model(model, what):
    """The engine's model read from its file, whose sidecar says how to read images and CSV rows."""
    from . import _candela
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(f"{what} is read with the model's input spec: give the model as its file "
                         f"(.pt/.onnx with its .json sidecar), or the data as .npy.")
    return _candela.Model(os.fspath(model), "", "model")


def _model_ref(model):
    """What a worker needs to rebuild the model: a path, a scripted module's bytes, or the object."""
    if isinstance(model, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(model))
        st = os.stat(path)
        return ("path", path, f"{path}:{st.st_size}:{st.st_mtime_ns}")
    if isinstance(model, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        data = buf.getvalue()
        return ("script", data, hashlib.sha256(data).hexdigest())
    return ("object", model, f"{type(model).__module__}.{type(model).__qualname__}")


def _worker_model(ref):
    key = ref[2]
    if key not in _worker_models:
        if ref[0] == "path":
            _worker_models[key] = ref[1]  # the engine loads (and caches) it
        elif ref[0] == "script":
            _worker_models[key] = torch.jit.load(io.BytesIO(ref[1]))
        else:
            _worker_models[key] = ref[1]
    return _worker_models[key]


def _atomic_write(path, write):
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _shard_name(out, index):
    return os.path.join(out, f"shard-{index:05d}")


_malloc_checked = False


def _tune_malloc():
    """Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536. Setting any glibc threshold
    switches off glibc's dynamic mmap threshold, which then stays at 128 KiB: every tensor above it
    is a fresh mmap whose pages fault in on first touch, and IG on the digits CNN ran 3x slower (0.36
    -> 1.1 s for 500 digits). Raising the mmap threshold to its maximum (32 MiB) and the trim
    threshold to 64 MiB restores the speed (0.35 s); memory above 64 MiB is still returned."""
    global _malloc_checked
    if _malloc_checked:
        return
    _malloc_checked = True
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        return
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except OSError:
        pass  # not glibc: nothing to undo


def _explain_shard(ref, shard, index, out, method, targets, kwargs, threads):
    """One task: explain one shard and write its two files (the JSON last)."""
    import candela
    _tune_malloc()
    torch.set_num_threads(threads)
    model = _worker_model(ref)
    x = _load_shard(shard, model)
    target = targets if targets is None or isinstance(targets, (int, str)) else list(targets)
    e = candela.explain(model, x, method, target=target, **kwargs)
    base = _shard_name(out, index)
    _atomic_write(base + ".npy", lambda f: np.save(f, e.values.numpy()))
    facts = {"shard": index, "rows": int(x.shape[0]), "targets": e.targets, "warnings": e.warnings,
             "convergence_delta": None if e.convergence_delta is None else e.convergence_delta.tolist(),
             "model_evaluations": e.metadata.get("model_evaluations"), "pid": os.getpid()}
    _atomic_write(base + ".json", lambda f: f.write(json.dumps(facts).encode()))
    return index


# ------------------------------------------------------------------------------------------- running
class _Cluster:
    """The client to use, and a LocalCluster to close afterwards when we made it."""

    def __init__(self, client, n_workers, threads_per_worker):
        from distributed import Client, LocalCluster
        self.cluster = None
        if client is None or client == "local":
            import dask
            # Without Dask's MALLOC_TRIM_THRESHOLD_ (see _tune_malloc): glibc's own dynamic thresholds.
            environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                       if k != "MALLOC_TRIM_THRESHOLD_"}
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                            processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        elif isinstance(client, str):
            self.client = Client(client)
        else:
            self.client = client
        self.own_client = client is None or isinstance(client, str)

    def close(self):
        if self.own_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _run_shards(label, client, n_workers, threads_per_worker, todo, progress, task):
    """Submits task(i, threads) -> (function, *args) for every shard in `todo` (retried twice on a
    lost worker) and waits for all, showing progress; closes a cluster it started."""
    from distributed import as_completed
    cluster = _Cluster(client, n_workers, threads_per_worker)
    try:
        threads = threads_per_worker if cluster.cluster is not None else 1
        futures = [cluster.client.submit(*task(i, threads), key=f"candela-{label}-{i}-{time.time()}", retries=2)
                   for i in todo]
        for done, f in enumerate(as_completed(futures), 1):
            f.result()
            if progress:
                print(f"\r{label}: {done}/{len(todo)} shards", end="\n" if done == len(todo) else "", flush=True)
    finally:
        cluster.close()


def _manifest(out, settings):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "manifest.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != settings:
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{out} holds a run with other settings ({', '.join(changed)} differ): "
                             f"give another out= folder, or delete this one to start again.")
        return
    _atomic_write(path, lambda f: f.write(json.dumps(settings, indent=1).encode()))


def _targets_for(labels, shards):
    """Per-shard targets: None (top-1), one class for all, or the slice of a label array."""
    if labels is None or isinstance(labels, (int, str)):
        return [labels] * len(shards)
    lab = np.load(labels) if isinstance(labels, (str, os.PathLike)) else np.asarray(labels)
    out, start = [], 0
    for s in shards:
        n = s[3] - s[2] if s[0] == "npy" and s[2] is not None else (
            len(s[1]) if s[0] in ("array", "images") else np.load(s[1], mmap_mode="r").shape[0])
        out.append([int(v) for v in lab[start:start + n]])
        start += n
    if start != len(lab):
        raise ValueError(f"labels has {len(lab)} entries for {start} samples; give one per sample.")
    return out


def _csv_shards(shards, model, shard_size):
    if len(shards) != 1 or shards[0][0] != "csv":
        return shards
    from . import _candela
    rows = _candela.load_input(_spec_model(model, "a CSV file"), shards[0][1]).numpy()
    return plan_shards(rows, shard_size)


def explain_dataset(model, data, method, out, client=None, labels=None, shard_size=64, n_workers=2,
                    threads_per_worker=1, progress=True, **options):
    """Explains every sample of ``data`` with ``method`` on a Dask cluster; returns the summary
    dict (shards, rows, skipped, seconds). ``labels``: None (top-1), one class, or per-sample
    classes (array or .npy path). ``options``: the method's options (as ``candela.explain``)."""
    out = os.path.abspath(os.fspath(out))
    shards = _csv_shards(plan_shards(data, shard_size), model, shard_size)
    targets = _targets_for(labels, shards)
    ref = _model_ref(model)
    kwargs = dict(options)
    settings = {"method": method, "options": _jsonable(kwargs), "model": ref[2], "shards": len(shards),
                "shard_size": shard_size, "data": os.fspath(data) if isinstance(data, (str, os.PathLike)) else
                hashlib.sha256(np.ascontiguousarray(data.cpu().numpy() if isinstance(data, torch.Tensor) else
                                                    data).tobytes()).hexdigest(),
                "labels": _jsonable(labels) if not isinstance(labels, np.ndarray) else labels.tolist()}
    _manifest(out, settings)
    todo = [i for i in range(len(shards)) if not os.path.exists(_shard_name(out, i) + ".json")]
    start = time.perf_counter()
    if todo:
        _run_shards("explain_dataset", client, n_workers, threads_per_worker, todo, progress,
                    lambda i, threads: (_explain_shard, ref, shards[i], i, out, method, targets[i], kwargs, threads))
    return {"shards": len(shards), "explained": len(todo), "skipped": len(shards) - len(todo),
            "seconds": time.perf_counter() - start, "out": out}


def load_results(out):
    """All shards' attributions of a finished run, in data order, as one tensor."""
    with open(os.path.join(out, "manifest.json")) as f:
        n = json.load(f)["shards"]
    missing = [i for i in range(n) if not os.path.exists(_shard_name(out, i) + ".json")]
    if missing:
        raise ValueError(f"{out}: shards {missing[:5]} are not finished; run explain_dataset again to resume.")
    return torch.cat([torch.from_numpy(np.load(_shard_name(out, i) + ".npy")) for i in range(n)])


def _evaluate_shard(ref, shard, index, out, methods, metrics, targets, method_options, metric_options, threads):
    import candela
    _tune_malloc()
    torch.set_num_threads(threads)
    model = _worker_model(ref)
    x = _load_shard(shard, model)
    target = targets if targets is None or isinstance(targets, (int, str)) else list(targets)
    scores = {}
    for m in methods:
        e = candela.explain(model, x, m, target=target, options=method_options.get(m, {}))
        t = torch.tensor(e.targets, dtype=torch.int64) if e.targets else None
        for metric in metrics:
            s = candela.metrics.score(metric, model, x, e.values, target=t, method=m,
                                      method_options=method_options.get(m, {}), **metric_options.get(metric, {}))
            scores.setdefault(m, {})[metric] = s.double().tolist()
    base = _shard_name(out, index)
    _atomic_write(base + ".json", lambda f: f.write(json.dumps({"shard": index, "rows": int(x.shape[0]),
                                                                "scores": scores}).encode()))
    return index


def evaluate_dataset(model, data, methods, metrics, out, client=None, labels=None, shard_size=64, n_workers=2,
                     threads_per_worker=1, method_options=None, metric_options=None, progress=True):
    """``methods`` scored by ``metrics`` over ``data`` on a Dask cluster, resumable like
    :func:`explain_dataset`; returns {method: {metric: mean score}} over every sample."""
    out = os.path.abspath(os.fspath(out))
    shards = _csv_shards(plan_shards(data, shard_size), model, shard_size)
    targets = _targets_for(labels, shards)
    ref = _model_ref(model)
    method_options, metric_options = method_options or {}, metric_options or {}
    settings = {"evaluate": list(methods), "metrics": list(metrics), "model": ref[2], "shards": len(shards),
                "shard_size": shard_size, "method_options": _jsonable(method_options),
                "metric_options": _jsonable(metric_options),
                "data": os.fspath(data) if isinstance(data, (str, os.PathLike)) else "array"}
    _manifest(out, settings)
    todo = [i for i in range(len(shards)) if not os.path.exists(_shard_name(out, i) + ".json")]
    if todo:
        _run_shards("evaluate_dataset", client, n_workers, threads_per_worker, todo, progress,
                    lambda i, threads: (_evaluate_shard, ref, shards[i], i, out, list(methods), list(metrics),
                                        targets[i], method_options, metric_options, threads))
    table = {}
    for i in range(len(shards)):
        with open(_shard_name(out, i) + ".json") as f:
            for m, per_metric in json.load(f)["scores"].items():
                for metric, values in per_metric.items():
                    table.setdefault(m, {}).setdefault(metric, []).extend(values)
    return {m: {metric: float(np.mean(v)) for metric, v in d.items()} for m, d in table.items()}


def _jsonable(v):
    from ._core import _jsonable as j
    return j(v)


# ------------------------------------------------------------------------------------------- command line
def _typed_options(method, pairs):
    """KEY=VALUE pairs typed by the method's schema (as the CLI's --option)."""
    from ._core import method_info
    schema = method_info(method)["options"]
    out = {}
    for kv in pairs:
        key, eq, text = kv.partition("=")
        if not eq or not key:
            raise ValueError(f"--option takes KEY=VALUE, got '{kv}'.")
        kind = schema.get(key, {}).get("type")
        if kind == "array":
            out[key] = [json.loads(t) if t.strip().lstrip("-").replace(".", "", 1).isdigit() else t
                        for t in text.split(",")] if text else []
        elif kind in ("integer", "number", "boolean", "object"):
            out[key] = json.loads(text)
        else:
            out[key] = text
    return out


def main(argv=None):
    """``candela explain-dataset`` (the CLI hands its arguments to this)."""
    import argparse
    p = argparse.ArgumentParser(
        prog="candela explain-dataset",
        description="Explain a whole data set on a Dask cluster: one result file per shard, resumable.",
        epilog="Example:\n  candela explain-dataset --model resnet18.pt --data images/ --method integrated_gradients \\\n"
               "      --option n_steps=32 --out ig/ --scheduler local --workers 2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="TorchScript (.pt) or ONNX (.onnx) model file")
    p.add_argument("--data", required=True, help=".npy or .csv file, or a folder of .npy files or images")
    p.add_argument("--method", required=True, help="Attribution method (see `candela methods`)")
    p.add_argument("--out", required=True, help="Output folder (resumed if it holds the same run)")
    p.add_argument("--scheduler", default="local", help="Dask scheduler address, or 'local' for a LocalCluster")
    p.add_argument("--labels", help="Class to explain for every sample, or a .npy of one class per sample")
    p.add_argument("--option", action="append", default=[], help="Method option KEY=VALUE (repeatable)")
    p.add_argument("--shard-size", type=int, default=64, help="Samples per shard (one task, one file)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster: worker processes")
    p.add_argument("--threads-per-worker", type=int, default=1, help="LocalCluster: threads per worker")
    p.add_argument("--quiet", action="store_true", help="No progress")
    a = p.parse_args(argv)
    labels = a.labels
    if labels is not None and not labels.endswith(".npy"):
        labels = int(labels) if labels.lstrip("-").isdigit() else labels
    try:
        r = explain_dataset(a.model, a.data, a.method, a.out, client=a.scheduler, labels=labels,
                            shard_size=a.shard_size, n_workers=a.workers, threads_per_worker=a.threads_per_worker,
                            progress=not a.quiet, **_typed_options(a.method, a.option))
    except (ValueError, TypeError, OSError) as e:
        print(f"candela: error: {e}", file=__import__("sys").stderr)
        return 1
    if not a.quiet:
        print(f"{r['shards']} shards ({r['explained']} explained, {r['skipped']} already done) in {r['out']}, "
              f"{r['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
