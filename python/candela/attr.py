"""Captum's attribution classes on Candela's engine: same names, constructors and ``attribute``
arguments, so switching is one import (``from candela.attr import IntegratedGradients``).

Each class is a row of one table: the registered method it runs, Captum's positional order of
``attribute``'s arguments, and Captum's keyword names where Candela's option is named otherwise.
Every other keyword is the method's own option (see ``candela.methods()``), checked by the engine:
an unknown one raises ValueError naming the closest. Methods Captum lacks (Score-CAM, RISE,
Grad-CAM++, ...) get a class too, named after the paper (``ScoreCam``), with ``attribute(inputs,
target=None, baselines=None, feature_mask=None, **options)``.

What differs from Captum, on purpose:
- ``additional_forward_args`` needs a TorchScript model (scripted or traced with those arguments);
  each tensor holds one row per sample or one row for all, and non-tensor values are refused.
- A tuple of input tensors is not supported: one tensor [N, ...].
- ``Lime`` follows the lime package's definition (Candela's ``lime``), not Captum's ``Lime``
  defaults; ``n_samples`` is lime's ``num_samples``.
- ``LRP(model, composite="epsilon_plus")`` takes Zennit's composites by name instead of rules set
  on modules.
"""
import re

from . import _core

__all__ = []


class Attribution:
    """Base of every class here: ``attribute(inputs, ...)`` runs ``method`` through the engine."""
    method = None            # registered method name
    positional = ("target",)  # Captum's order of attribute()'s arguments after `inputs`
    renames = {}             # Captum keyword -> Candela option
    defaults = {}            # Captum defaults that differ from Candela's
    layer = False            # the constructor takes (forward_func, layer)
    spatial = False          # a CAM: Captum returns the map at the layer's resolution

    def __init__(self, forward_func, *args, **options):
        self.forward_func = forward_func
        self.layer_arg = None
        if self.layer:
            if args:
                self.layer_arg, args = args[0], args[1:]
            elif "layers" not in options and self.layer != "optional":
                raise TypeError(f"{type(self).__name__}(forward_func, layer): give the layer.")
            options.pop("device_ids", None)
        if args:
            raise TypeError(f"{type(self).__name__} takes the model{' and the layer' if self.layer else ''} "
                            f"positionally, options by keyword (e.g. multiply_by_inputs=False).")
        self.constructor_options = options

    def _options(self, kwargs):
        options = dict(self.defaults)
        options.update(self.constructor_options)
        for key, value in kwargs.items():
            key = self.renames.get(key, key)
            if key is not None:  # None: a Captum argument without meaning here
                options[key] = value
        return options

    def attribute(self, inputs, *args, **kwargs):
        if len(args) > len(self.positional):
            raise TypeError(f"{type(self).__name__}.attribute takes at most {len(self.positional) + 1} positional "
                            f"arguments (inputs, {', '.join(self.positional)}).")
        for name, value in zip(self.positional, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}.attribute got two values for {name}.")
            kwargs[name] = value
        forward_args = kwargs.pop("additional_forward_args", None)
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise ValueError("Candela explains one input tensor [N, ...]; a tuple of inputs is not supported.")
            inputs = inputs[0]
        delta = kwargs.pop("return_convergence_delta", False)
        kwargs.pop("return_input_shape", None)
        kwargs.pop("show_progress", None)
        target = kwargs.pop("target", None)
        baselines = kwargs.pop("baselines", None)
        feature_mask = kwargs.pop("feature_mask", None)
        batch_size = kwargs.pop("batch_size", 0)
        progress = kwargs.pop("progress", False)
        options = self._options(kwargs)
        layers = None
        if self.layer_arg is not None:
            layers = [self.layer_arg]
        e = self._explain(inputs, target, baselines, feature_mask, layers, options, batch_size, progress,
                          forward_args)
        self.last_explanation = e
        if delta:
            if e.convergence_delta is None:
                raise ValueError(f"{type(self).__name__} has no convergence delta; drop return_convergence_delta.")
            return e.values, e.convergence_delta
        return e.values

    def _explain(self, inputs, target, baselines, feature_mask, layers, options, batch_size, progress,
                 forward_args=None):
        return _core.explain(self.forward_func, inputs, self.method, target=target, baselines=baselines,
                             feature_mask=feature_mask, layers=layers, batch_size=batch_size, progress=progress,
                             options=options, additional_forward_args=forward_args)

    def has_convergence_delta(self):
        return bool(_core.method_info(self.method).get("completeness"))


def _define(name, method, base=Attribution, doc=None, **attrs):
    cls = type(name, (base,), dict(method=method, **attrs))
    info = next((m for m in _core.methods() if m["name"] == method), None)
    if info is not None:
        opts = "\n".join(f"    {k} (default {v.get('default')!r}): {v.get('description', '')}"
                         for k, v in sorted(info["options"].items()))
        cls.__doc__ = (doc or f"{info['description']}\n\n{info['reference']}") + (
            f"\n\nRuns Candela's `{method}`. Options:\n{opts}" if opts else f"\n\nRuns Candela's `{method}`.")
    globals()[name] = cls
    __all__.append(name)
    return cls


_B = ("baselines", "target")
# ---- gradient
_define("Saliency", "saliency", positional=("target", "abs"))
_define("InputXGradient", "input_x_gradient")
_define("IntegratedGradients", "integrated_gradients",
        positional=("baselines", "target", "additional_forward_args", "n_steps", "method", "internal_batch_size",
                    "return_convergence_delta"))
_define("GradientShap", "gradient_shap",
        positional=("baselines", "n_samples", "stdevs", "target", "additional_forward_args",
                    "return_convergence_delta"))
_define("ExpectedGradients", "expected_gradients", positional=_B)
_define("DeepLift", "deep_lift", positional=("baselines", "target", "additional_forward_args",
                                             "return_convergence_delta"))
_define("DeepLiftShap", "deep_lift_shap", positional=("baselines", "target", "additional_forward_args",
                                                      "return_convergence_delta"))
_define("GuidedBackprop", "guided_backprop")
_define("Deconvolution", "deconvolution")
# ---- perturbation
_define("Occlusion", "occlusion", positional=("sliding_window_shapes", "strides", "baselines", "target",
                                              "additional_forward_args", "perturbations_per_eval"),
        defaults={"perturbations_per_eval": 1})
_define("FeatureAblation", "feature_ablation", positional=("baselines", "target", "additional_forward_args",
                                                           "feature_mask", "perturbations_per_eval"),
        defaults={"perturbations_per_eval": 1})
_define("ShapleyValueSampling", "shapley_value_sampling",
        positional=("baselines", "target", "additional_forward_args", "feature_mask", "n_samples",
                    "perturbations_per_eval"), defaults={"perturbations_per_eval": 1})
_define("ShapleyValues", "exact_shapley", positional=("baselines", "target", "additional_forward_args",
                                                      "feature_mask", "perturbations_per_eval"),
        defaults={"perturbations_per_eval": 1})
_define("KernelShap", "kernel_shap", positional=("baselines", "target", "additional_forward_args", "feature_mask",
                                                 "n_samples", "perturbations_per_eval"),
        defaults={"n_samples": 25, "perturbations_per_eval": 1})
_define("Lime", "lime", positional=("baselines", "target", "additional_forward_args", "feature_mask", "n_samples",
                                    "perturbations_per_eval"),
        renames={"n_samples": "num_samples", "perturbations_per_eval": None},
        defaults={"num_samples": 50})
_define("Rise", "rise", positional=("baselines", "target", "feature_mask"))
# ---- layer and neuron (Captum's layer argument is a module or a dotted name)
_define("LayerActivation", "layer_activation", positional=(), layer=True)
_define("LayerGradientXActivation", "layer_gradient_x_activation", positional=("target",), layer=True)
_define("LayerIntegratedGradients", "layer_integrated_gradients",
        positional=("baselines", "target", "additional_forward_args", "n_steps", "method", "internal_batch_size",
                    "return_convergence_delta"), layer=True)
_define("LayerConductance", "layer_conductance",
        positional=("baselines", "target", "additional_forward_args", "n_steps", "method", "internal_batch_size",
                    "return_convergence_delta"), layer=True)
_define("NeuronGradient", "neuron_gradient", positional=("neuron_selector",), layer=True)
_define("NeuronIntegratedGradients", "neuron_integrated_gradients",
        positional=("neuron_selector", "baselines", "additional_forward_args", "n_steps", "method",
                    "internal_batch_size"), layer=True)
# Captum's LayerGradCam: the map at the layer's resolution, ReLU only when asked.
_define("LayerGradCam", "grad_cam", positional=("target", "additional_forward_args", "attribute_to_layer_input",
                                                "relu_attributions"),
        layer=True, renames={"relu_attributions": "relu"},
        defaults={"relu": False, "upsample": False, "normalize": False})
# pytorch-grad-cam's GradCAM: upsampled to the input, ReLU, scaled to [0, 1] (Candela's defaults).
_define("GradCam", "grad_cam", positional=("target",), layer="optional")
_define("GuidedGradCam", "guided_grad_cam", positional=("target", "additional_forward_args", "interpolate_mode"),
        layer=True)


# Attributes to a layer's input are not supported; Captum's default (False) is.
def _no_layer_input(cls):
    original = cls._options

    def _options(self, kwargs):
        if kwargs.pop("attribute_to_layer_input", False):
            raise ValueError("attribute_to_layer_input=True is not supported: name the layer before instead.")
        kwargs.pop("attr_dim_summation", None)
        return original(self, kwargs)
    cls._options = _options


for _name in ("LayerActivation", "LayerGradientXActivation", "LayerIntegratedGradients", "LayerConductance",
              "NeuronGradient", "NeuronIntegratedGradients", "LayerGradCam", "GuidedGradCam"):
    _no_layer_input(globals()[_name])


class LRP(Attribution):
    """Layer-wise relevance propagation with Zennit's composites (``LRP(model, composite=
    "epsilon_plus_flat")``); the model must be scripted or traced."""
    method = "lrp"
    positional = ("target", "additional_forward_args", "return_convergence_delta")


__all__.append("LRP")


class NoiseTunnel(Attribution):
    """Captum's NoiseTunnel around another class here: ``NoiseTunnel(IntegratedGradients(model))
    .attribute(x, nt_type="smoothgrad", nt_samples=10, stdevs=0.2, target=3, n_steps=20)``."""
    method = "noise_tunnel"
    positional = ("nt_type", "nt_samples", "nt_samples_batch_size", "stdevs", "draw_baseline_from_distrib")
    _own = {"nt_type", "nt_samples", "nt_samples_batch_size", "stdevs", "draw_baseline_from_distrib", "seed"}

    def __init__(self, attribution_method):
        if not isinstance(attribution_method, Attribution):
            raise TypeError("NoiseTunnel wraps an attribution object from candela.attr, e.g. "
                            "NoiseTunnel(IntegratedGradients(model)).")
        if attribution_method.layer:
            raise ValueError("NoiseTunnel around a layer method is not supported.")
        self.base = attribution_method
        self.forward_func = attribution_method.forward_func
        self.layer_arg = None
        self.constructor_options = {}

    def _options(self, kwargs):
        own = {k: v for k, v in kwargs.items() if k in self._own}
        base = self.base._options({k: v for k, v in kwargs.items() if k not in self._own})
        own.update(base_method=self.base.method, base_options=base)
        return own


__all__.append("NoiseTunnel")


def _class_name(method):
    special = {"cam": "Cam", "lrp": "LRP", "xgrad": "XGrad", "hires": "HiRes", "rise": "Rise"}
    return "".join(special.get(p, p.capitalize()) for p in re.split(r"_", method)).replace("PlusPlus", "PlusPlus")


_TAKEN = {cls.method for cls in (globals()[n] for n in __all__) if isinstance(cls, type)}
# Every other registered method: a class named after it (ScoreCam, GradCamPlusPlus, SurrogateTree...).
for _m in _core.methods():
    if _m["name"] in _TAKEN:
        continue
    _cam = _m["family"] == "cam" or "layers" in _m["options"]
    _define(_class_name(_m["name"]), _m["name"], positional=("target",) if not _m["uses_baseline"] else _B,
            layer="optional" if _cam and _m["name"] != "full_grad" else False)
