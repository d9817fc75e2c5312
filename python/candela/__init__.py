"""Candela: explanations of deep-learning models from Python, computed by Candela's C++ engine.

Two ways in, both on the same engine as the ``candela`` command line:

* Captum's classes and call shapes, so switching is one import::

    from candela.attr import IntegratedGradients
    attr, delta = IntegratedGradients(model).attribute(x, target=3, baselines=0, n_steps=50,
                                                       return_convergence_delta=True)

* one function for every registered method, returning an :class:`Explanation`::

    import candela
    e = candela.explain(model, x, method="grad_cam", target=3, layers=["layer4"])
    e.values, e.warnings, e.plot()

``model`` is a ``torch.jit.ScriptModule`` (every method), a plain ``torch.nn.Module`` or any
callable ``[N, ...] -> [N, C]`` (called back for each batch; methods that rewrite the graph, such
as LRP, DeepLIFT and guided backprop, need a scripted or traced model and say so), or the path of
a ``.pt``/``.onnx`` file. Inputs are ``torch.Tensor`` or numpy arrays ``[N, ...]``. The engine
releases the GIL while it runs, and uses torch's thread count (``torch.set_num_threads``).
"""
import torch  # noqa: F401  (first: registers torch's types for the extension)

from . import _candela
from ._core import Explanation, evaluate, explain, method_info, methods, metric_info, metrics_list, run_job
from . import attr, metrics  # noqa: E402

__all__ = ["explain", "evaluate", "Explanation", "methods", "method_info", "metrics_list", "metric_info",
           "run_job", "attr", "metrics", "reuse_freed_memory"]
__version__ = "0.1.0"


def reuse_freed_memory():
    """Keep the memory this process frees for its own reuse (glibc: no mmap for large blocks, no
    trimming), as the ``candela`` command does: each batch's tensors then reuse pages already
    mapped instead of fresh ones the kernel must fault in and zero (Integrated Gradients on resnet18
    at 10-25 rows a batch: 1.1-1.2x faster, with a lower peak). It replaces torch's CPU allocator, so
    the whole process is affected, torch's own calls included, and its resident memory stays at
    its peak. Returns whether it took effect (glibc only; not when
    ``MALLOC_*`` thresholds or ``CANDELA_NO_MEMORY_REUSE`` are set)."""
    return _candela.reuse_freed_memory()
