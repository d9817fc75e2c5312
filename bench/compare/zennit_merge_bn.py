"""Where Candela's lrp and zennit 0.5.1 part on resnet18: zennit 0.5.1's batch-norm merge, layer by layer.

    ZENNIT_SRC=/tmp/zennit/src /usr/bin/python3 bench/compare/zennit_merge_bn.py [--model build/fixtures/resnet18.pt]
        [--input x.npy] [--target 3] [--candela lrp_epsilon_plus_flat_candela.npy]

zennit 0.5.1's MergeBatchNorm (ResNetCanonizer) folds each BatchNorm into the convolution before it and then turns
the batch norm into an identity by setting running_mean 0, running_var 1, weight 1, bias 0, but keeps its eps: the
"identity" computes x / sqrt(1 + eps), x * (1 - 5.0e-6) at eps 1e-5. zennit 1.0.0 sets eps to 0 as well (commit
c30e3cc, "set the batch-norm's eps to zero ... thus fixing the slightly different values"). This runs zennit's
EpsilonPlusFlat + ResNetCanonizer twice in float64, as published and with that one fix applied to 0.5.1, and prints
how far the canonized model's output is from the model's and, at the output of every leaf module (and at the
input), max |relevance(0.5.1) - relevance(fixed)| / max |relevance(fixed)| and the same for the activations. With
--candela (the attribution compare.py --keep DIR leaves, same --input and --target) it also prints Candela against
both in float32. --input defaults to the fixture's sample_224.png normalised as compare.py does.
"""
import argparse
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default=os.path.join(ROOT, 'build/fixtures/resnet18.pt'))
    p.add_argument('--input')
    p.add_argument('--target', type=int, default=3)
    p.add_argument('--candela', help="Candela's attribution (.npy) for the same input and target")
    args = p.parse_args()
    src = os.environ.get('ZENNIT_SRC')
    if not src:
        sys.exit('set ZENNIT_SRC to zennit 0.5.1\'s src/ (bench/compare/README.md)')
    sys.path[:0] = [src, HERE]
    import anchors
    import compare
    import zennit.canonizers as zc
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    if args.input is None:
        args.input = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'zennit_merge_bn_x.npy')
        compare.write_input(args.model, args.input)
    x = torch.from_numpy(np.load(args.input))
    scripted = torch.jit.load(args.model)
    merge = zc.MergeBatchNorm.merge_batch_norm

    def run(dtype, eps_zero, record):
        def patched(modules, batch_norm):
            merge(modules, batch_norm)
            if eps_zero:
                batch_norm.eps = 0.0  # zennit 1.0.0's fix
        model = anchors.eager_resnet18(scripted).to(dtype)
        xd = x.to(dtype)
        with torch.no_grad():
            y_model = model(xd)
        relevance, activation, names, handles = {}, {}, [], []
        zc.MergeBatchNorm.merge_batch_norm = staticmethod(patched)
        try:
            with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
                if record:
                    for name, module in model.named_modules():
                        if next(module.children(), None) is not None and not name.endswith('canonizer_sum'):
                            continue

                        def hook(_, __, out, name=name):
                            key = name if name not in activation else name + ' (2nd call)'  # a block's ReLU
                            names.append(key)
                            activation[key] = out.detach().clone()
                            if out.requires_grad:
                                out.register_hook(lambda g: relevance.__setitem__(key, g.detach().clone()))
                        handles.append(module.register_forward_hook(hook))
                one_hot = torch.zeros_like(y_model)
                one_hot[:, args.target] = 1
                y_canonized, r = attributor(xd, one_hot)
        finally:
            zc.MergeBatchNorm.merge_batch_norm = staticmethod(merge)
            for h in handles:
                h.remove()
        relevance['input'] = r.detach()
        return {'r': r.detach().numpy(), 'rel': relevance, 'act': activation, 'names': names,
                'output': rel(y_canonized.detach(), y_model)}

    old, new = run(torch.float64, False, True), run(torch.float64, True, True)
    print(f'float64, target {args.target}. Canonized model output against the model: zennit 0.5.1 '
          f'{old["output"]:.2e}, with eps 0 {new["output"]:.2e}\n')
    print('| at the output of | activation 0.5.1 vs fixed | relevance 0.5.1 vs fixed |')
    print('|---|---|---|')
    for name in new['names'] + ['input']:
        act = f'{rel(old["act"][name], new["act"][name]):.2e}' if name in new['act'] else ''
        r = f'{rel(old["rel"][name], new["rel"][name]):.2e}' if name in new['rel'] else ''
        print(f'| {name} | {act} | {r} |')
    if args.candela:
        c = np.load(args.candela).reshape(old['r'].shape)
        old32, new32 = run(torch.float32, False, False), run(torch.float32, True, False)
        print(f'\nCandela (float32) against zennit 0.5.1 float32: {rel(c, old32["r"]):.2e}; against 0.5.1 with eps 0: '
              f'{rel(c, new32["r"]):.2e} (float32), {rel(c, new["r"]):.2e} (float64); zennit with eps 0, float32 '
              f'against float64: {rel(new32["r"], new["r"]):.2e}')


if __name__ == '__main__':
    main()
