"""Compare Candela's rule-based methods with zennit (LRP) and Captum (DeepLIFT and guided methods).

A hand-run check, not part of the test suite; CI does not need it.  It builds models that are not among the test
fixtures (fixed seeds, eval mode, BatchNorms with non-trivial running statistics): `cnn` (conv-relu-maxpool-conv-bn-
relu-avgpool-linear, 1x12x12), `mlp` (10-16-16-3), `resblocks` (a hand-written net of two BasicBlock-like blocks,
3x32x32), `resnet18` (torchvision, random init, 3x64x64) and `vgg` (two conv blocks, two Linear layers with Dropout,
3x16x16).  It saves each as TorchScript (torch.jit.trace) with its input (clamped to [-2.9, 2.9]), runs
`candela explain ... --target 1` on them, and compares the result with the Python libraries:

  * LRP (`--method lrp --option composite=...`) against zennit's composites EpsilonPlus, EpsilonPlusFlat,
    EpsilonGammaBox(low=-3, high=3), EpsilonAlpha2Beta1 and EpsilonAlpha2Beta1Flat (attr_output = one_hot(target)),
    on every model;
  * deep_lift (zeros baseline), deep_lift_shap (5 random baselines), guided_backprop, deconvolution and
    guided_grad_cam against Captum's DeepLift, DeepLiftShap, GuidedBackprop, Deconvolution and GuidedGradCam, on the
    models where Captum itself is right (see `captum_model`).

zennit and Captum are NOT shipped with Candela: put them (their source trees will do) on PYTHONPATH.  zennit 1.0.0
needs torch >= 2.1; with torch 1.13 use zennit 0.5.1, whose rules and composites are the same (the one difference,
in the BatchNorm merge, is patched below).  Written against torch 1.13, zennit 0.5.1 and Captum 0.8.0 (the
captum path is the source tree holding the `captum` package).  From the repository root:

    PYTHONPATH=/path/to/zennit-0.5.1/src:/path/to/captum python3 bench/compare_rules.py \
        [--candela build/bin/candela] [--quick] [--work DIR]

--candela defaults to build/bin/candela under the repository root; --quick skips torchvision's resnet18; the models,
inputs and Candela's outputs go into --work (default: a fresh tempfile.mkdtemp()).  Prints one row per comparison:
max|a-b| / max|b| (a = Candela, b = reference), both sums, PASS if that is <= 1e-4, and the wall time of each side
(informational: Candela's includes starting the process and loading the model).  Exits 1 if any row FAILs.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torchvision

try:
    from zennit.attribution import Gradient
    from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, MergeBatchNorm, SequentialMergeBatchNorm
    from zennit.composites import (EpsilonAlpha2Beta1, EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlus,
                                   EpsilonPlusFlat)
    from zennit.layer import Sum
    from zennit.torchvision import ResNetCanonizer
    from captum.attr import Deconvolution, DeepLift, DeepLiftShap, GuidedBackprop, GuidedGradCam
except ImportError as exc:
    sys.exit(f'compare_rules.py needs zennit and captum on PYTHONPATH (see the docstring): {exc}')

warnings.filterwarnings('ignore', category=UserWarning, module=r'captum\.')  # "setting hooks on ReLU ..." notes
TARGET = 1
LOW, HIGH = -3.0, 3.0
TOL = 1e-4  # float32 noise: ~1e-7, ~5e-6 on resnet18 (zennit's rounding; vs float64 zennit Candela is at ~5e-7)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# zennit 1.0.0 sets the folded BatchNorm's eps to 0, so the BN left behind is an exact identity; 0.5.1 leaves eps in
# place and the "identity" BN still divides by sqrt(1 + eps) (~1e-5 relative).  Give 0.5.1 the 1.0.0 behaviour
# (a no-op on 1.0.0, where eps is already 0 after the merge); the original eps comes back on remove().
_merge_register, _merge_remove = MergeBatchNorm.register, MergeBatchNorm.remove


def _register(self, linears, batch_norm):
    eps = batch_norm.eps
    _merge_register(self, linears, batch_norm)  # the merge itself uses the BN's own eps
    if batch_norm.eps != 0:
        self.saved_bn_eps, batch_norm.eps = eps, 0.0


def _remove(self):
    _merge_remove(self)
    if hasattr(self, 'saved_bn_eps'):
        self.batch_norm.eps = self.saved_bn_eps


MergeBatchNorm.register, MergeBatchNorm.remove = _register, _remove


# ---------------------------------------------------------------------------------------------------- models
class Clone(nn.Module):
    def forward(self, x):
        return x.clone()


class Block(nn.Module):
    """BasicBlock-like: conv-bn-relu-conv-bn, plus the identity or a 1x1-conv-bn downsample, then relu."""
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def branches(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return (x if self.downsample is None else self.downsample(x)), out

    def forward(self, x):  # what gets traced
        identity, out = self.branches(x)
        return self.relu2(out + identity)


class BlockCanonizer(AttributeCanonizer):
    """zennit.torchvision.ResNetBasicBlockCanonizer for `Block`: while applied, the addition runs through a
    zennit.layer.Sum module (so the composite gives it the Norm rule).  stack([a, b], -1).sum(-1) is exactly a + b,
    so the forward is unchanged (checked in `zennit_lrp`)."""
    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, Block):
            return {'forward': cls.forward.__get__(module), 'canonizer_sum': Sum()}
        return None

    @staticmethod
    def forward(self, x):
        identity, out = self.branches(x)
        return self.relu2(self.canonizer_sum(torch.stack([identity, out], dim=-1)))


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = Block(8, 8, 1)
        self.layer2 = Block(8, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def perturb_bn(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)


def build_models(quick):
    """name -> (model, input, --input-shape, zennit canonizer factory, Grad-CAM layer path or None, seed)."""
    def make(name, seed, ctor, shape, canon, cam=None):
        torch.manual_seed(seed)
        model = ctor()
        perturb_bn(model, seed + 100)
        x = torch.randn((1,) + shape, generator=torch.Generator().manual_seed(seed + 200)).clamp(-2.9, 2.9)
        return name, (model.eval(), x, ','.join(map(str, shape)), canon, cam, seed)

    plain = lambda: [SequentialMergeBatchNorm()]  # noqa: E731
    specs = [
        make('cnn', 11, lambda: nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.BatchNorm2d(8),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)), (1, 12, 12), plain, cam='3'),
        make('mlp', 12, lambda: nn.Sequential(
            nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)), (10,), lambda: []),
        make('resblocks', 13, SmallResNet, (3, 32, 32),
             lambda: [CompositeCanonizer((SequentialMergeBatchNorm(), BlockCanonizer()))], cam='layer2'),
        make('vgg', 15, lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)), (3, 16, 16), plain, cam='6'),
    ]
    if not quick:
        specs.insert(3, make('resnet18', 14, lambda: torchvision.models.resnet18(weights=None), (3, 64, 64),
                             lambda: [ResNetCanonizer()]))
    return dict(specs)


def captum_model(name, model):
    """The model Captum gets, or None where Captum's own result is wrong.  Captum's DeepLift hooks every ReLU and
    MaxPool module; (1) a ReLU module used twice (torchvision's resnet18) raises, and (2) when a ReLU's output tensor
    is itself the input of a MaxPool, the ReLU's multiplier sees the max-pool gradient from before the MaxPool hook
    rewrites it, so DeepLift stops being complete.  A Clone() between the two (same modules, same weights, same
    forward) gives the textbook Rescale + max-pool rule, which is what Candela computes on the unchanged model."""
    if name == 'resnet18':
        return None
    if not isinstance(model, nn.Sequential):
        return model
    mods = []
    for m in model:
        if isinstance(m, nn.MaxPool2d) and mods and isinstance(mods[-1], nn.ReLU):
            mods.append(Clone())
        mods.append(m)
    return nn.Sequential(*mods).eval()


def module_at(model, path):
    for part in path.split('.'):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


# ---------------------------------------------------------------------------------------------------- references
COMPOSITES = [
    ('epsilon_plus', lambda c: EpsilonPlus(canonizers=c), []),
    ('epsilon_plus_flat', lambda c: EpsilonPlusFlat(canonizers=c), []),
    ('epsilon_gamma_box', lambda c: EpsilonGammaBox(low=LOW, high=HIGH, canonizers=c), [f'low={LOW}', f'high={HIGH}']),
    ('epsilon_alpha2_beta1', lambda c: EpsilonAlpha2Beta1(canonizers=c), []),
    ('epsilon_alpha2_beta1_flat', lambda c: EpsilonAlpha2Beta1Flat(canonizers=c), []),
]


def zennit_lrp(model, x, composite):
    with torch.no_grad():
        plain = model(x)
    one_hot = torch.zeros_like(plain)
    one_hot[:, TARGET] = 1.0
    with Gradient(model=model, composite=composite) as attributor:
        out, rel = attributor(x.clone().requires_grad_(), one_hot)
    # the canonized model must compute the same function (BN folded, additions through Sum)
    err = float((out - plain).abs().max() / plain.abs().max())
    assert err < 1e-5, f'canonized forward differs from the model by {err:.2e} (relative)'
    return rel


def captum_methods(model, x, baselines, cam, cam_module):
    yield 'deep_lift', [], lambda: DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=TARGET)
    yield 'deep_lift_shap', ['--baseline', 'dist:' + baselines[0]], \
        lambda: DeepLiftShap(model).attribute(x, baselines=baselines[1], target=TARGET)
    yield 'guided_backprop', [], lambda: GuidedBackprop(model).attribute(x, target=TARGET)
    yield 'deconvolution', [], lambda: Deconvolution(model).attribute(x, target=TARGET)
    if cam is not None:  # cam: the layer's path in the traced model; cam_module: the same module object
        yield 'guided_grad_cam', ['--layer', cam], lambda: GuidedGradCam(model, cam_module).attribute(x, target=TARGET)


# ---------------------------------------------------------------------------------------------------- driver
class Runner:
    def __init__(self, args):
        self.args, self.rows = args, []

    def candela(self, name, shape, method, tag, options=(), extra=()):
        out = os.path.join(self.args.work, f'out_{name}_{method}_{tag}')
        cmd = [self.args.candela, 'explain', '--model', os.path.join(self.args.work, name + '.pt'),
               '--input', os.path.join(self.args.work, name + '_input.npy'), '--input-shape', shape,
               '--method', method, '--target', str(TARGET), '--out', out, '--quiet', *extra]
        for o in options:
            cmd += ['--option', o]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f'candela exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-400:]}\n'
                               f'  command: {" ".join(cmd)}')
        return np.load(os.path.join(out, 'attributions.npy')), dt

    def compare(self, name, shape, lib, method, tag, reference, options=(), extra=()):
        what = f'{method}:{tag}' if tag else method
        t0 = time.perf_counter()
        b = reference().detach().numpy().astype(np.float64)
        t_ref = time.perf_counter() - t0
        try:
            a, t_can = self.candela(name, shape, method, tag, options, extra)
        except RuntimeError as exc:
            print(f'{name} {what}: {exc}', file=sys.stderr)
            self.rows.append((name, lib, what, float('inf'), float('nan'), float(b.sum()), t_ref, float('nan')))
            return
        a = a.astype(np.float64)
        rel = float('inf') if a.size != b.size else \
            float(np.abs(a.reshape(b.shape) - b).max() / max(np.abs(b).max(), 1e-30))
        self.rows.append((name, lib, what, rel, float(a.sum()), float(b.sum()), t_ref, t_can))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--candela', default=os.path.join(REPO, 'build', 'bin', 'candela'))
    parser.add_argument('--quick', action='store_true', help='skip torchvision resnet18')
    parser.add_argument('--work', default=None, help='folder for models, inputs and outputs (default: a temp dir)')
    args = parser.parse_args()
    args.work = args.work or tempfile.mkdtemp(prefix='candela_compare_rules_')
    os.makedirs(args.work, exist_ok=True)
    if not os.access(args.candela, os.X_OK):
        sys.exit(f'no candela binary at {args.candela} (build it, or pass --candela)')
    print(f'candela: {args.candela}\nwork:    {args.work}\ntorch {torch.__version__}', flush=True)

    run = Runner(args)
    for name, (model, x, shape, canonizers, cam, seed) in build_models(args.quick).items():
        with torch.no_grad():
            traced = torch.jit.trace(model, x)
            assert torch.equal(traced(x), model(x)), f'{name}: traced model differs from the eager one'
        traced.save(os.path.join(args.work, name + '.pt'))
        np.save(os.path.join(args.work, name + '_input.npy'), x.numpy().astype(np.float32))
        print(f'== {name} {tuple(x.shape)}', flush=True)

        for cname, composite, options in COMPOSITES:
            run.compare(name, shape, 'zennit', 'lrp', cname,
                        lambda: zennit_lrp(model, x, composite(canonizers())),
                        options=[f'composite={cname}', *options])

        cmodel = captum_model(name, model)
        if cmodel is None:
            continue
        gen = torch.Generator().manual_seed(seed + 300)
        base = torch.randn((5,) + tuple(x.shape[1:]), generator=gen).clamp(-2.9, 2.9)  # DeepLiftShap baselines
        base_file = os.path.join(args.work, name + '_baselines.npy')
        np.save(base_file, base.numpy().astype(np.float32))
        # Clone() insertion shifts Sequential indices, so find the Grad-CAM layer in the ORIGINAL model (the Captum
        # model shares its modules) by the path the traced model knows it by
        cam_module = module_at(model, cam) if cam is not None else None
        for method, extra, reference in captum_methods(cmodel, x.clone(), (base_file, base), cam, cam_module):
            run.compare(name, shape, 'captum', method, '', reference, extra=extra)

    print(f'\n{"model":10s} {"library":7s} {"method[:composite]":42s} {"max|a-b|/max|b|":>16s} '
          f'{"sum(candela)":>13s} {"sum(ref)":>13s} {"t_ref":>7s} {"t_candela":>9s}  result')
    failed = 0
    for name, lib, what, rel, sa, sb, t_ref, t_can in run.rows:
        ok = rel <= TOL
        failed += not ok
        t_can = f'{t_can:.3f}s' if t_can == t_can else '-'
        print(f'{name:10s} {lib:7s} {what:42s} {rel:16.2e} {sa:13.6g} {sb:13.6g} {t_ref:6.3f}s {t_can:>9s}  '
              f'{"PASS" if ok else "FAIL"}')
    print(f'\n{len(run.rows) - failed}/{len(run.rows)} passed (tolerance {TOL:g}); outputs in {args.work}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
