# Copyright (c) lmclip_mm authors.
"""Loss/sampler ablation of LM-CLIP on the generated toy long-tailed set.

Trains the quickstart model (configs/lmclip_toy_mlt_tiny.py) once per
variant through tools/train.py, each in a fresh process with the same seed,
and prints the final test mAP overall / head / middle / tail:

* ``bce``    ERM-style binary cross-entropy on the class logits
             (mmpretrain's CrossEntropyLoss with sigmoid), uniform sampling;
* ``asl``    mmpretrain's AsymmetricLoss (gamma- 4, clip 0.05), uniform;
* ``bal``    BalancedAsymmetricLoss with class weights, uniform sampling;
* ``lmclip`` BAL + CLIP contrastive loss + ClassAwareRepeatSampler (the
             quickstart config as it is).

It is a toy: a tiny CLIP trained from scratch on drawn shapes. Report what
it shows, whatever it shows. ~2 minutes per variant on 2 CPU cores.

    python tools/analysis/toy_ablation.py [--epochs 30] [--variants bce lmclip]
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

from lmclip_tools import CONFIGS

CONFIG = osp.join(CONFIGS, 'lmclip_toy_mlt_tiny.py')
# `_delete_=True` replaces a dict of the config instead of merging into it.
UNIFORM = [
    'train_dataloader.sampler._delete_=True',
    'train_dataloader.sampler.type=DefaultSampler',
    'train_dataloader.sampler.shuffle=True'
]
NO_BAL = ['model.class_weight_power=None', 'model.contrastive_loss=None']

#: variant -> (description, --cfg-options)
VARIANTS = {
    'bce': ('BCE (ERM), uniform sampling', [
        'model.loss._delete_=True', 'model.loss.type=CrossEntropyLoss',
        'model.loss.use_sigmoid=True', *NO_BAL, *UNIFORM
    ]),
    'asl': ('ASL, uniform sampling', [
        'model.loss._delete_=True', 'model.loss.type=AsymmetricLoss',
        'model.loss.gamma_neg=4.0', 'model.loss.clip=0.05', *NO_BAL,
        *UNIFORM
    ]),
    'bal': ('BAL + class weights, uniform sampling',
            ['model.contrastive_loss=None', *UNIFORM]),
    'lmclip': ('BAL + contrastive + class-aware sampler (LM-CLIP)', []),
}
KEYS = ('mAP', 'mAP_head', 'mAP_middle', 'mAP_tail')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=30)
    parser.add_argument(
        '--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--work-dir', default='work_dirs/toy_ablation')
    parser.add_argument(
        '--data-root', default=None,
        help='toy set location (default: the config\'s data/toy_mlt/)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def run_variant(name, args):
    options = VARIANTS[name][1]
    work_dir = osp.join(args.work_dir, name)
    cmd = [
        sys.executable, '-m', 'lmclip_tools.train', CONFIG, '--work-dir',
        work_dir,
        '--cfg-options', f'train_cfg.max_epochs={args.epochs}',
        f'train_cfg.val_interval={args.epochs}',
        f'randomness.seed={args.seed}', *options
    ]
    if args.data_root:
        cmd += [f'{k}.dataset.data_root={args.data_root}' for k in
                ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    start = time.time()
    os.makedirs(work_dir, exist_ok=True)
    log_path = osp.join(work_dir, 'train_output.log')
    print(f'  training log: {log_path}', flush=True)
    with open(log_path, 'w', encoding='utf-8') as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        shown = 0
        while proc.poll() is None:
            time.sleep(2)
            epoch = _last_epoch(log_path)
            if epoch > shown and (epoch - shown >= 5 or
                                  epoch == args.epochs):
                print(f'  epoch {epoch}/{args.epochs} '
                      f'({time.time() - start:.0f} s)', flush=True)
                shown = epoch
    if proc.returncode != 0:
        with open(log_path, encoding='utf-8', errors='replace') as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f'variant {name} failed (log: {log_path}):\n'
                           f'{tail}')
    return final_metrics(work_dir), time.time() - start


_EPOCH = re.compile(r'Epoch\(train\)\s+\[(\d+)\]')


def _last_epoch(log_path: str) -> int:
    """The last training epoch the log has reached (0 before the first)."""
    with open(log_path, encoding='utf-8', errors='replace') as f:
        found = _EPOCH.findall(f.read())
    return int(found[-1]) if found else 0


def final_metrics(work_dir):
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data',
                                         'scalars.json')))
    path = osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')
    with open(path, encoding='utf-8') as f:
        records = [json.loads(line) for line in f]
    val = [r for r in records if 'long-tail/mAP' in r]
    return {k: val[-1][f'long-tail/{k}'] for k in KEYS}


def format_table(rows):
    header = ('variant', 'mAP', 'head', 'middle', 'tail', 'time (s)')
    lines = [header] + [(desc, *(f'{m[k]:.2f}' for k in KEYS), f'{t:.0f}')
                        for desc, m, t in rows]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    fmt = ' | '.join(['{:<%d}' % widths[0]] +
                     ['{:>%d}' % w for w in widths[1:]])
    out = [fmt.format(*lines[0]), '-+-'.join('-' * w for w in widths)]
    out += [fmt.format(*r) for r in lines[1:]]
    return '\n'.join(out)


def main(argv=None):
    args = parse_args(argv)
    rows = []
    total = len(args.variants)
    for i, name in enumerate(args.variants, 1):
        print(f'[{i}/{total} {name}] {VARIANTS[name][0]}: training '
              f'{args.epochs} epochs into {osp.join(args.work_dir, name)}',
              flush=True)
        metrics, seconds = run_variant(name, args)
        rows.append((VARIANTS[name][0], metrics, seconds))
        print(f'[{i}/{total} {name}] done in {seconds:.0f} s: mAP '
              f'{metrics["mAP"]:.2f}, tail {metrics["mAP_tail"]:.2f}',
              flush=True)
    title = (f'Toy long-tailed set, {args.epochs} epochs, seed {args.seed} '
             '(test mAP, %):')
    table = format_table(rows)
    print(f'\n{title}\n{table}')
    out = osp.join(args.work_dir, 'results.txt')
    with open(out, 'w', encoding='utf-8') as f:
        f.write(f'{title}\n{table}\n')
    print(f'table written to {out}; each variant\'s run (checkpoints, logs) '
          f'in {args.work_dir}/<variant>/')
    return rows


def cli():
    """``python tools/analysis/toy_ablation.py``."""
    main()


if __name__ == '__main__':
    cli()
