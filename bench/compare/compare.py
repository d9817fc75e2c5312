"""Candela against the reference libraries, side by side, in one run: the driver of bench/compare/.

    /usr/bin/python3 bench/compare/compare.py [--cases ig50,occlusion] [--threads 2] [--rounds 2] [--repeats 2]
        [--candela build/bin/bench_compare] [--model build/fixtures/resnet18.pt] [--text-model build/fixtures/text_bert.pt]

Writes one input (the fixture's sample image normalised with the model's mean/std when both are next to the model,
else seeded randn [1, 3, 224, 224]) to a temporary folder, then for each case alternates processes for --rounds
rounds: Candela (bench_compare), the anchor under each of its settings (anchors.py), Candela, ...; each process
does its own warm-up and --repeats timed runs. Keeps each side's best time (the anchor's over all its settings),
compares the first round's attributions, and prints a Markdown table with the command line and thread count.
A case whose anchor library is not given (CAPTUM_SRC, GRADCAM_SRC, ZENNIT_SRC, LIME_SRC) still shows Candela's time.
The token cases (kernel_shap_tokens) run on --text-model instead: the first test sentence's ids (text_test_ids.npy
beside it), its label as the target; after the table, each side's top-ranked word against the planted trigger.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CASES = ['ig50', 'smoothgrad10', 'gradient_shap', 'deeplift', 'lrp_epsilon_plus_flat', 'grad_cam', 'score_cam',
         'ablation_cam', 'ablation_cam_full', 'occlusion', 'feature_ablation', 'lime100', 'kernel_shap',
         'kernel_shap_tokens']
ANCHOR = {'ablation_cam_full': 'ablation_cam'}  # Candela cases measured against another case's anchor (default: own)
STOCHASTIC = {'smoothgrad10', 'gradient_shap', 'lime100', 'kernel_shap', 'kernel_shap_tokens'}  # drawn noise differs
TOKEN_CASES = {'kernel_shap_tokens'}  # on --text-model, one sentence's token ids


def write_token_input(model, path):
    """The text fixture's first test sentence: ids [1, 16] int64, its label and planted trigger position."""
    folder = os.path.dirname(os.path.abspath(model))
    ids = np.load(os.path.join(folder, 'text_test_ids.npy'))[:1].astype(np.int64)
    label = int(np.load(os.path.join(folder, 'text_test_labels.npy'))[0])
    trigger = int(np.load(os.path.join(folder, 'text_test_trigger.npy'))[0])
    np.save(path, ids)
    return ids, label, trigger


def top_word(path, ids):
    """The position of the largest attribution among the words (ids >= 5: not [PAD], [UNK], [CLS], [SEP], [MASK])."""
    try:
        a = np.load(path).astype(np.float64).reshape(ids.shape)
    except (OSError, ValueError):
        return None
    return int(np.where(ids[0] >= 5, a[0], -np.inf).argmax())


def write_input(model, path):
    """The fixture's sample image, normalised as the model's sidecar says; seeded randn when either is missing."""
    folder = os.path.dirname(os.path.abspath(model))
    image, sidecar = os.path.join(folder, 'sample_224.png'), os.path.splitext(model)[0] + '.json'
    try:
        from PIL import Image
        spec = json.load(open(sidecar))['input']
        rgb = np.asarray(Image.open(image).convert('RGB'), dtype=np.float32) / 255.0
        x = (rgb - np.array(spec['mean'], np.float32)) / np.array(spec['std'], np.float32)
        x, what = x.transpose(2, 0, 1)[None], f'{image}, normalised with {os.path.basename(sidecar)}\'s mean/std'
    except (OSError, KeyError, ValueError, ImportError):
        x, what = np.random.default_rng(0).standard_normal((1, 3, 224, 224)), 'seeded randn (numpy, seed 0)'
    np.save(path, np.ascontiguousarray(x, dtype=np.float32))
    return what


def run_json(cmd):
    """Runs one process; returns its last stdout line as JSON, or {'error': ...}."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {'error': f'exit {proc.returncode}: ' + ' | '.join(tail)}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {'error': 'no JSON line: ' + lines[-1][:200]}


def agreement(candela, anchor):
    """max |a - b| / max |b|, b the anchor's attribution (same number of elements: CAM maps [1, H, W] vs [1, 1, H, W])."""
    try:
        a, b = np.load(candela).astype(np.float64).ravel(), np.load(anchor).astype(np.float64).ravel()
    except OSError:
        return 'n/a'
    if a.size != b.size:
        return f'shapes differ ({a.size} vs {b.size} values)'
    return f'{np.abs(a - b).max() / max(np.abs(b).max(), 1e-30):.1e}'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--cases', default=','.join(CASES), help='comma-separated, from: ' + ', '.join(CASES))
    p.add_argument('--threads', type=int, default=os.cpu_count(), help='both sides (default: every core)')
    p.add_argument('--rounds', type=int, default=2, help='alternations of Candela and the anchor settings')
    p.add_argument('--repeats', type=int, default=2, help='timed runs per process, after one warm-up')
    p.add_argument('--candela', default=os.path.join(ROOT, 'build/bin/bench_compare'))
    p.add_argument('--model', default=os.path.join(ROOT, 'build/fixtures/resnet18.pt'))
    p.add_argument('--text-model', default=os.path.join(ROOT, 'build/fixtures/text_bert.pt'),
                   help='the text fixture, for the token cases')
    p.add_argument('--target', type=int, default=3, help='class of the image cases (token cases: the label)')
    p.add_argument('--keep', help='keep the input and attributions in this folder (default: a temporary one)')
    args = p.parse_args()
    cases = [c for c in args.cases.split(',') if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f'unknown cases {unknown}; known: {CASES}')
    needed = [(args.candela, '--candela')]
    if any(c not in TOKEN_CASES for c in cases):
        needed.append((args.model, '--model'))
    if any(c in TOKEN_CASES for c in cases):
        needed.append((args.text_model, '--text-model'))
    for path, what in needed:
        if not os.path.exists(path):
            p.error(f'{what} {path} does not exist (build it, or point {what} at one)')

    work = args.keep or tempfile.mkdtemp(prefix='candela-compare-')
    os.makedirs(work, exist_ok=True)
    timing = ['--threads', str(args.threads), '--repeats', str(args.repeats)]
    common, inputs_what = {}, []
    if any(c not in TOKEN_CASES for c in cases):
        x = os.path.join(work, 'x.npy')
        inputs_what.append(f'resnet18 224x224, one image ({write_input(args.model, x)}), target {args.target}')
        common['image'] = ['--model', args.model, '--input', x, '--target', str(args.target)] + timing
    if any(c in TOKEN_CASES for c in cases):
        x = os.path.join(work, 'ids.npy')
        token_ids, label, trigger = write_token_input(args.text_model, x)
        inputs_what.append(f'{os.path.basename(args.text_model)}, one sentence (text_test_ids.npy row 0, '
                           f'{int((token_ids > 0).sum())} tokens), target its label {label}, planted trigger at '
                           f'position {trigger}')
        common['tokens'] = ['--model', args.text_model, '--input', x, '--target', str(label)] + timing
    anchors = [sys.executable, os.path.join(HERE, 'anchors.py')]
    started = time.perf_counter()
    groups = {}  # anchor case -> the Candela cases compared with it, run in the same alternation
    for case in cases:
        groups.setdefault(ANCHOR.get(case, case), []).append(case)
    rows = []
    for anchor_case, candela_cases in groups.items():
        info = run_json(anchors + ['--case', anchor_case, '--list-settings'])
        case_common = common['tokens' if anchor_case in TOKEN_CASES else 'image']
        settings = info.get('settings', [])
        candela_best, anchor_best, notes, skipped = {}, {}, [], None
        anchor_out = os.path.join(work, f'{anchor_case}_anchor.npy')
        for r in range(args.rounds):
            for case in candela_cases:
                out = ['--out', os.path.join(work, f'{case}_candela.npy')] if r == 0 else []
                res = run_json([args.candela, '--case', case] + case_common + out)
                if 'error' in res:
                    notes.append(f'{case}: Candela: ' + res['error'])
                elif case not in candela_best or res['seconds'] < candela_best[case]['seconds']:
                    candela_best[case] = res
            for s in ([] if skipped else settings):
                out = ['--out', anchor_out] if r == 0 and s == settings[0] else []
                res = run_json(anchors + ['--case', anchor_case, '--setting', s] + case_common + out)
                if 'skipped' in res:
                    skipped = res['skipped']
                    break
                if 'error' in res:
                    notes.append(f'{anchor_case}: {s}: ' + res['error'])
                elif s not in anchor_best or res['seconds'] < anchor_best[s]['seconds']:
                    anchor_best[s] = res
            print(f'{anchor_case}: round {r + 1} done ({time.perf_counter() - started:.0f} s)', file=sys.stderr,
                  flush=True)
        for i, case in enumerate(candela_cases):
            rows.append({'case': case, 'library': info.get('library', '?'), 'candela': candela_best.get(case),
                         'anchor': anchor_best, 'skipped': skipped,
                         'agree': agreement(os.path.join(work, f'{case}_candela.npy'), anchor_out),
                         'notes': notes if i == len(candela_cases) - 1 else []})
    total = time.perf_counter() - started

    cmd = ' '.join(shlex.quote(a) for a in [sys.executable] + sys.argv)
    print(f'\n`{cmd}`\n')
    print(f'{"; ".join(inputs_what)}; {args.threads} threads on both sides; '
          f'best of {args.rounds} rounds x {args.repeats} repeats per process, alternating; {total:.0f} s in all.\n')
    print('| method | anchor (library, best setting) s | Candela s | anchor ÷ Candela | max \\|Δ\\| / max \\|ref\\| |')
    print('|---|---|---|---|---|')
    details = []
    for row in rows:
        case, library, cb, ab = row['case'], row['library'], row['candela'], row['anchor']
        c_s = f'{cb["seconds"]:.3f}' if cb else 'error'
        if ab:
            best = min(ab.values(), key=lambda r: r['seconds'])
            a_s = f'{best["seconds"]:.3f} ({library}, {best["setting"]})'
            ratio = f'{best["seconds"] / cb["seconds"]:.2f}x' if cb else ''
            details.append(f'- {case}: ' + '; '.join(f'{s} {r["seconds"]:.3f} s ({r["evaluations"]} rows)'
                                                      for s, r in ab.items())
                           + (f'; Candela {cb["setting"]}, {cb["evaluations"]} evaluations' if cb else ''))
        else:
            a_s, ratio = f'skipped ({library}: {row["skipped"] or "no result"})', ''
        agree_s = 'stochastic' if case in STOCHASTIC else (row['agree'] if ab and cb else '')
        print(f'| {case} | {a_s} | {c_s} | {ratio} | {agree_s} |')
        details += [f'- error: {n}' for n in row['notes']]
    if details:
        print('\nEvery anchor setting (best time, rows through the model in one run), and Candela\'s batching:\n')
        print('\n'.join(details))
    checks = []
    for case in (c for c in cases if c in TOKEN_CASES):
        anchor_case = ANCHOR.get(case, case)
        c_top = top_word(os.path.join(work, f'{case}_candela.npy'), token_ids)
        a_top = top_word(os.path.join(work, f'{anchor_case}_anchor.npy'), token_ids)
        checks.append(f'- {case}: planted trigger at position {trigger}; top-ranked word: Candela position {c_top}'
                      f' ({"trigger" if c_top == trigger else "NOT the trigger"}), Captum position {a_top}'
                      f' ({"trigger" if a_top == trigger else "NOT the trigger"})')
    if checks:
        print('\nSanity check (sampled values differ between the libraries; the planted trigger should rank first):\n')
        print('\n'.join(checks))


if __name__ == '__main__':
    main()
