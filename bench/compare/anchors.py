"""The anchor side of bench/compare/: one case of bench_compare run in the reference library it matches.

    /usr/bin/python3 bench/compare/anchors.py --case ig50 --model build/fixtures/resnet18.pt --input x.npy \
        --target 3 --threads 2 --repeats 3 [--setting S] [--out a.npy]

Runs the case once as a warm-up, then --repeats timed runs, and prints one JSON line
{"case", "library", "setting", "seconds" (best), "all", "evaluations" (rows through the model in the last run),
"threads"}; --out writes the attribution (.npy) for the agreement check. --list-settings prints the case's library
and settings (each one of the library's own batching knobs; compare.py measures every one and keeps the best).

The libraries come from source trees named by CAPTUM_SRC, GRADCAM_SRC, ZENNIT_SRC, LIME_SRC (prepended to sys.path;
see bench/compare/README.md). A case whose library is not given or does not import prints {"case", "skipped": why}
and exits 0. Hooks do not work on TorchScript, so the anchors run torchvision's eager resnet18 holding the scripted
fixture's state_dict, checked to give the scripted model's output (within 1e-4) before anything is timed.

Run with /usr/bin/python3 (Debian's torch); torch's default in Python is one thread here, hence --threads (default:
every core, as bench_compare).
"""
import argparse
import json
import os
import sys
import time
import types
import warnings

import numpy as np
import torch
import torch.nn as nn

GRID = 32  # feature cells of feature_ablation, lime100 and kernel_shap: 7 x 7 = 49 groups on 224 x 224

# case -> (env var of its library, library name, settings); the first setting is the library's default.
CASES = {
    'ig50': ('CAPTUM_SRC', 'captum', ['internal_batch_size=None', 'internal_batch_size=10', 'internal_batch_size=25']),
    'smoothgrad10': ('CAPTUM_SRC', 'captum',
                     ['nt_samples_batch_size=None', 'nt_samples_batch_size=1', 'nt_samples_batch_size=5']),
    'gradient_shap': ('CAPTUM_SRC', 'captum', ['default']),
    'deeplift': ('CAPTUM_SRC', 'captum', ['default']),
    'lrp_epsilon_plus_flat': ('ZENNIT_SRC', 'zennit', ['attributor per call', 'attributor entered once']),
    'grad_cam': ('GRADCAM_SRC', 'pytorch-grad-cam', ['default']),
    'score_cam': ('GRADCAM_SRC', 'pytorch-grad-cam', ['batch_size=16', 'batch_size=32', 'batch_size=64']),
    'ablation_cam': ('GRADCAM_SRC', 'pytorch-grad-cam', ['batch_size=32', 'batch_size=16', 'batch_size=64']),
    'occlusion': ('CAPTUM_SRC', 'captum',
                  ['perturbations_per_eval=1', 'perturbations_per_eval=16', 'perturbations_per_eval=64']),
    'feature_ablation': ('CAPTUM_SRC', 'captum',
                         ['perturbations_per_eval=1', 'perturbations_per_eval=16', 'perturbations_per_eval=64']),
    'lime100': ('LIME_SRC', 'lime', ['batch_size=10', 'batch_size=25', 'batch_size=100']),
    'kernel_shap': ('CAPTUM_SRC', 'captum',
                    ['perturbations_per_eval=1', 'perturbations_per_eval=16', 'perturbations_per_eval=64']),
    'kernel_shap_tokens': ('CAPTUM_SRC', 'captum',
                           ['perturbations_per_eval=1', 'perturbations_per_eval=16', 'perturbations_per_eval=64']),
}
TOKEN_CASES = {'kernel_shap_tokens'}  # on the text fixture (text_bert.pt), input: token ids [1, 16]
SEP = 3  # the text fixture's [SEP] id; [PAD] is 0


def value(setting):
    """'name=V' -> V as int, or None for 'None'."""
    v = setting.split('=', 1)[1]
    return None if v == 'None' else int(v)


# ---------------------------------------------------------------------------------------------------- libraries
def import_library(env, library):
    """Puts the source tree on sys.path and imports; returns None or why not."""
    src = os.environ.get(env)
    if not src:
        return f'{library} not given: set {env} to its source tree (bench/compare/README.md)'
    if not os.path.isdir(src):
        return f'{env}={src} is not a directory'
    sys.path.insert(0, src)
    if library == 'pytorch-grad-cam':
        try:
            import ttach  # noqa: F401  (only its augmentation-smoothing option needs it)
        except ImportError:
            class _Any:
                def __init__(self, *a, **k):
                    pass
            stub = types.ModuleType('ttach')
            stub.__getattr__ = lambda name: _Any
            sys.modules['ttach'] = stub
    module = {'captum': 'captum.attr', 'zennit': 'zennit.composites', 'pytorch-grad-cam': 'pytorch_grad_cam',
              'lime': 'lime.lime_image'}[library]
    try:
        __import__(module)
    except Exception as exc:  # a tree that does not import here is skipped, not an error of the benchmark
        return f'{library} from {src} does not import: {type(exc).__name__}: {exc}'
    return None


# ---------------------------------------------------------------------------------------------------- the model
def eager_resnet18(scripted):
    import torchvision
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(scripted.state_dict())
    return model.eval()


class Clone(nn.Module):
    def forward(self, x):
        return x.clone()


def _block_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu2(self.bn2(self.conv2(out)) + identity)


def deeplift_ready(model):
    """The same function for Captum's DeepLift, which hooks ReLU and MaxPool modules: (1) torchvision's BasicBlock
    calls one ReLU module twice, which DeepLift refuses, so each block gets a second ReLU; (2) the stem's ReLU output
    feeds the MaxPool directly, where Captum's ReLU multiplier sees the max-pool gradient before the MaxPool hook
    rewrites it; a Clone between them gives the textbook Rescale + max-pool rule (bench/compare_rules.py found both).
    Captum stays incomplete on this max-pool all the same: its windows overlap (3x3, stride 2) and Captum's rule routes
    the multipliers back with max_unpool2d, which keeps one window's value per position instead of adding them
    (bench/compare/README.md)."""
    model.relu = nn.ReLU()
    model.maxpool = nn.Sequential(Clone(), model.maxpool)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            block.relu, block.relu2 = nn.ReLU(), nn.ReLU()
            block.forward = types.MethodType(_block_forward, block)
    return model.eval()


def check_same(model, reference_output, x, what):
    with torch.no_grad():
        err = float((model(x) - reference_output).abs().max())
    assert err <= 1e-4, f'{what} differs from the scripted model by {err:.2e} (max |diff|) on the input'


def grid_mask(height, width):
    """Ids of GRID x GRID cells, row-major (Candela's grid_mask), int64 [H, W]."""
    rows = torch.arange(height) // GRID
    cols = torch.arange(width) // GRID
    return rows[:, None] * ((width + GRID - 1) // GRID) + cols[None, :]


def token_groups(ids):
    """One KernelSHAP feature per token position up to [SEP]; [SEP] and the padding after it form one group (the
    padding equals the [PAD] baseline, so it changes no coalition). bench_compare.cpp builds the same mask, as does
    tests/unit/test_text_attention.cpp."""
    mask = torch.arange(ids.shape[1]).repeat(ids.shape[0], 1)
    for i in range(ids.shape[0]):
        sep = int((ids[i] == SEP).nonzero()[0, 0])
        mask[i, sep:] = sep
    return mask


class TokenModel(nn.Module):
    """The traced text fixture behind an nn.Module taking the int64 ids, counting the rows it sees."""
    def __init__(self, scripted):
        super().__init__()
        self.scripted, self.rows = scripted, 0

    def forward(self, ids):
        self.rows += ids.shape[0]
        return self.scripted(ids)


# ---------------------------------------------------------------------------------------------------- the cases
def make_case(case, setting, model, x, target):
    """A function running one explanation, returning the attribution (tensor or array)."""
    zeros = torch.zeros_like(x)
    mask = grid_mask(x.shape[-2], x.shape[-1])[None, None]  # [1, 1, H, W], broadcast over channels
    if case == 'ig50':
        from captum.attr import IntegratedGradients
        ig = IntegratedGradients(model)
        return lambda: ig.attribute(x, baselines=zeros, target=target, n_steps=50, method='gausslegendre',
                                    internal_batch_size=value(setting))
    if case == 'smoothgrad10':
        from captum.attr import NoiseTunnel, Saliency
        nt = NoiseTunnel(Saliency(model))
        return lambda: nt.attribute(x, nt_type='smoothgrad', nt_samples=10, nt_samples_batch_size=value(setting),
                                    stdevs=1.0, target=target)
    if case == 'gradient_shap':
        from captum.attr import GradientShap
        gs = GradientShap(model)
        baselines = torch.cat([zeros, -x])
        return lambda: gs.attribute(x, baselines=baselines, n_samples=5, stdevs=0.0, target=target)
    if case == 'deeplift':
        from captum.attr import DeepLift
        dl = DeepLift(model)
        return lambda: dl.attribute(x, baselines=zeros, target=target)
    if case == 'lrp_epsilon_plus_flat':
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer
        with torch.no_grad():
            one_hot = torch.zeros_like(model(x))
        one_hot[:, target] = 1.0

        def attributor():
            return Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()]))
        if setting == 'attributor per call':
            def run():
                with attributor() as a:
                    return a(x, one_hot)[1]
            return run
        entered = attributor().__enter__()  # left registered: the process ends after the runs
        return lambda: entered(x, one_hot)[1]
    if case in ('grad_cam', 'score_cam', 'ablation_cam'):
        from pytorch_grad_cam import AblationCAM, GradCAM, ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        layers = [model.layer4]
        if case == 'grad_cam':
            cam = GradCAM(model=model, target_layers=layers)
        elif case == 'score_cam':
            cam = ScoreCAM(model=model, target_layers=layers)
            cam.batch_size = value(setting)  # ScoreCAM reads self.batch_size when set (default 16)
        else:
            cam = AblationCAM(model=model, target_layers=layers, batch_size=value(setting))
        targets = [ClassifierOutputTarget(target)]
        return lambda: cam(input_tensor=x, targets=targets)
    if case == 'occlusion':
        from captum.attr import Occlusion
        occ = Occlusion(model)
        return lambda: occ.attribute(x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0,
                                     target=target, perturbations_per_eval=value(setting))
    if case == 'feature_ablation':
        from captum.attr import FeatureAblation
        fa = FeatureAblation(model)
        return lambda: fa.attribute(x, baselines=0, target=target, feature_mask=mask,
                                    perturbations_per_eval=value(setting))
    if case == 'kernel_shap':
        from captum.attr import KernelShap
        ks = KernelShap(model)
        return lambda: ks.attribute(x, baselines=0, target=target, feature_mask=mask, n_samples=200,
                                    perturbations_per_eval=value(setting))
    if case == 'kernel_shap_tokens':
        # Captum perturbs the int64 ids itself: mask * ids + (1 - mask) * baseline, baseline 0 = [PAD].
        from captum.attr import KernelShap
        ks = KernelShap(model)
        groups = token_groups(x)
        return lambda: ks.attribute(x, baselines=0, target=target, feature_mask=groups, n_samples=200,
                                    perturbations_per_eval=value(setting))
    if case == 'lime100':
        from lime.lime_image import LimeImageExplainer
        image = x[0].permute(1, 2, 0).numpy().astype(np.float64)  # lime works on one HWC image
        segments = grid_mask(x.shape[-2], x.shape[-1]).numpy()
        explainer = LimeImageExplainer(kernel_width=0.25)

        def classify(batch):  # [B, H, W, C] -> the target logits and the rest (what Candela explains)
            with torch.no_grad():
                return model(torch.from_numpy(batch).permute(0, 3, 1, 2).float()).numpy()

        def run():
            e = explainer.explain_instance(image, classify, labels=(target,), hide_color=None, top_labels=None,
                                           num_features=10, num_samples=100, batch_size=value(setting),
                                           segmentation_fn=lambda img: segments, progress_bar=False)
            weights = np.zeros(int(segments.max()) + 1)
            for segment, w in e.local_exp[target]:
                weights[segment] = w
            return np.broadcast_to(weights[segments], x.shape)  # every element of a segment gets its weight
        return run
    raise ValueError(f'unknown case {case}')


# ---------------------------------------------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='example:\n  CAPTUM_SRC=/tmp/captum05 /usr/bin/python3 bench/compare/anchors.py '
                                       '--case ig50 --model build/fixtures/resnet18.pt --input x.npy --threads 2')
    p.add_argument('--case', required=True, choices=sorted(CASES))
    p.add_argument('--model', help='the scripted resnet18 fixture (default: build/fixtures/resnet18.pt; the token '
                                   'cases: build/fixtures/text_bert.pt)')
    p.add_argument('--input', help='.npy [1, 3, 224, 224] (default: seeded randn); token cases: ids [1, 16] '
                                   '(default: the first test sentence)')
    p.add_argument('--target', type=int, help='class to explain (default: 3; token cases: the predicted class)')
    p.add_argument('--threads', type=int, default=os.cpu_count())
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--setting', help='one of the case\'s settings (default: the library\'s default)')
    p.add_argument('--out', help='write the attribution here (.npy)')
    p.add_argument('--list-settings', action='store_true', help='print the case\'s library and settings as JSON')
    args = p.parse_args()

    env, library, settings = CASES[args.case]
    if args.list_settings:
        print(json.dumps({'case': args.case, 'library': library, 'settings': settings}))
        return
    setting = args.setting or settings[0]
    if setting not in settings:
        p.error(f'--setting {setting!r}: {args.case} has {settings}')
    why = import_library(env, library)
    if why:
        print(json.dumps({'case': args.case, 'library': library, 'skipped': why}))
        return
    warnings.filterwarnings('ignore')  # Captum's notes on hooks and in-place ReLUs
    torch.set_num_threads(args.threads)

    if args.case in TOKEN_CASES:
        model_path = args.model or 'build/fixtures/text_bert.pt'
        ids = np.load(args.input) if args.input else \
            np.load(os.path.join(os.path.dirname(model_path), 'text_test_ids.npy'))[:1]
        x = torch.from_numpy(np.asarray(ids)).long()
        x = x[None] if x.dim() == 1 else x
        model = TokenModel(torch.jit.load(model_path).eval())
        with torch.no_grad():
            target = args.target if args.target is not None else int(model(x)[0].argmax())
        run = make_case(args.case, setting, model, x, target)
        timed(args, setting, library, run, lambda: model.__setattr__('rows', 0), lambda: model.rows)
        return

    scripted = torch.jit.load(args.model or 'build/fixtures/resnet18.pt').eval()
    if args.input:
        x = torch.from_numpy(np.load(args.input)).float()
        x = x[None] if x.dim() == 3 else x
    else:
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference_output = scripted(x)
    model = eager_resnet18(scripted)
    check_same(model, reference_output, x, 'the eager resnet18')
    if args.case == 'deeplift':
        model = deeplift_ready(model)
        check_same(model, reference_output, x, 'the DeepLift-ready resnet18')

    rows = [0]  # rows entering the first layer: hooks on the model itself may run before Captum concatenates
    model.conv1.register_forward_pre_hook(lambda module, inputs: rows.__setitem__(0, rows[0] + inputs[0].shape[0]))
    run = make_case(args.case, setting, model, x, 3 if args.target is None else args.target)
    timed(args, setting, library, run, lambda: rows.__setitem__(0, 0), lambda: rows[0])


def timed(args, setting, library, run, reset_rows, rows):
    """A warm-up, then --repeats timed runs; writes --out and prints the JSON line."""
    attribution = run()  # warm-up
    times = []
    for _ in range(args.repeats):
        reset_rows()
        t0 = time.perf_counter()
        attribution = run()
        times.append(time.perf_counter() - t0)
    if args.out:
        a = attribution.detach().numpy() if torch.is_tensor(attribution) else np.asarray(attribution)
        np.save(args.out, a.astype(np.float32))
    print(json.dumps({'case': args.case, 'library': library, 'setting': setting, 'seconds': min(times),
                      'all': times, 'evaluations': rows(), 'threads': args.threads}))


if __name__ == '__main__':
    main()
