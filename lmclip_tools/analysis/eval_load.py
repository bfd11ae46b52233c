# Copyright (c) lmclip_mm authors.
"""Evaluation under load: COCO-MLT-sized test split, tiny model, end to end.

Writes stand-in JPEGs at the real COCO-MLT file layout (the real list files
from ``--split-dir``, e.g. data/coco_mlt/longtail2017 after
``bash data/download_coco_mlt.sh``), then
evaluates ``configs/lmclip_coco_mlt_vitb16.py`` with the tiny CLIP (random
weights, saved to a file) through
``tools/test.py --zero-shot`` in fresh processes on the first K images for
several K, and prints wall time, images/s and each process's peak RSS. The
peak must not grow with K beyond what the evaluator stores (two float32
vectors of C scores per image): the script reports the growth per image and
fails if it exceeds ``--max-growth-kib`` per image.

The stand-in images (about 820 MB for 5,000 500x375 JPEGs) go to a
temporary folder that is removed at the end, also on failure; ``--root DIR``
writes them to DIR instead and keeps them (a later run with the same DIR
reuses them).

    python tools/analysis/eval_load.py --split-dir data/coco_mlt/longtail2017
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from lmclip_tools import CONFIGS

CONFIG = osp.join(CONFIGS, 'lmclip_coco_mlt_vitb16.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--split-dir', required=True,
                        help='folder with coco_labels.txt and '
                        'coco_lt_test.txt, e.g. data/coco_mlt/longtail2017 '
                        '(data/README.md)')
    parser.add_argument('--sizes', type=int, nargs='+', default=[1000, 5000])
    parser.add_argument('--image-size', type=int, nargs=2, default=[500, 375],
                        help='stand-in JPEG width height')
    parser.add_argument('--model-size', type=int, default=64,
                        help='input size of the tiny model')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--root', default=None,
                        help='where to write the stand-in images and keep '
                        'them (default: a temporary folder, removed at the '
                        'end)')
    parser.add_argument('--max-growth-kib', type=float, default=16.0)
    return parser.parse_args(argv)


def make_root(split_dir, root, size):
    """Symlink the list files and write one stand-in JPEG per test line."""
    lt = osp.join(root, 'longtail2017')
    os.makedirs(lt, exist_ok=True)
    for name in os.listdir(split_dir):
        dst = osp.join(lt, name)
        if not osp.exists(dst):
            os.symlink(osp.abspath(osp.join(split_dir, name)), dst)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    with open(osp.join(split_dir, 'coco_lt_test.txt'), encoding='utf-8') as f:
        paths = [line.split()[0] for line in f if line.strip()]
    for i, rel in enumerate(paths):
        path = osp.join(root, rel)
        if osp.exists(path):
            continue
        os.makedirs(osp.dirname(path), exist_ok=True)
        Image.fromarray(np.roll(base, i, axis=1)).save(path, quality=90)
    return len(paths)


def random_weights(path, model_name='lmclip-tiny-vit'):
    """A weights file of a randomly initialised ``model_name``:
    ``tools/test.py --zero-shot`` refuses a CLIP without weights."""
    import torch
    from lmclip_mm.models.utils import create_clip_model
    torch.manual_seed(0)
    torch.save(create_clip_model(model_name).state_dict(), path)
    return path


def run_test(root, count, args, work_dir):
    out = osp.join(work_dir, f'metrics_{count}.json')
    weights = osp.join(work_dir, 'tiny_random.pt')
    if not osp.isfile(weights):
        random_weights(weights)
    s = args.model_size
    cmd = [
        sys.executable, '-m', 'lmclip_tools.test', CONFIG,
        '--zero-shot', '--work-dir', work_dir, '--out', out, '--out-item',
        'metrics', '--cfg-options', 'model.clip.model_name=lmclip-tiny-vit',
        f'model.clip.pretrained={weights}',
        f'test_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.indices={count}',
        f'test_dataloader.dataset.pipeline.0.scale=({s},{s})',
        f'test_dataloader.batch_size={args.batch_size}',
        f'test_dataloader.num_workers={args.num_workers}',
        'test_evaluator.apply_softmax=True'
    ]
    log = osp.join(work_dir, f'test_{count}.log')
    start = time.time()
    with open(log, 'w') as log_file:  # a file, not a pipe: no deadlock
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=log_file)
        # wait4 gives this child's own peak RSS (ru_maxrss, KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.time() - start
    if os.waitstatus_to_exitcode(status) != 0:
        with open(log, encoding='utf-8') as f:
            raise RuntimeError(f'tools/test.py failed:\n{f.read()[-3000:]}')
    with open(out, encoding='utf-8') as f:
        metrics = json.load(f)
    return elapsed, usage.ru_maxrss, metrics


def overall_map(metrics):
    """The overall mAP of a metrics dict, whatever the metric's prefix
    (``<prefix>/mAP``)."""
    keys = [k for k in metrics if k.split('/')[-1] == 'mAP']
    if len(keys) != 1:
        raise KeyError('expected one "<prefix>/mAP" metric, got '
                       f'{sorted(metrics)}')
    return metrics[keys[0]]


def main(argv=None):
    args = parse_args(argv)
    for name in ('coco_labels.txt', 'coco_lt_test.txt'):
        if not osp.isfile(osp.join(args.split_dir, name)):
            print(f'error: --split-dir {args.split_dir}: no {name} (the '
                  'COCO-MLT split files; see data/README.md)',
                  file=sys.stderr)
            return 2
    if args.root:
        status = evaluate(args, args.root)
        print(f'kept the stand-in images under {args.root}')
        return status
    with tempfile.TemporaryDirectory(prefix='coco_mlt_standin_') as root:
        status = evaluate(args, root)
        print(f'removed the stand-in images under {root} (--root DIR keeps '
              'them)')
    return status


def evaluate(args, root):
    t0 = time.time()
    n = make_root(args.split_dir, root, tuple(args.image_size))
    print(f'{n} stand-in test images ({args.image_size[0]}x'
          f'{args.image_size[1]} JPEG) under {root} '
          f'({time.time() - t0:.1f} s)')
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        for count in sorted(args.sizes):
            count = min(count, n)
            elapsed, rss_kib, metrics = run_test(root, count, args, work_dir)
            rows.append((count, elapsed, rss_kib, metrics))
            print(f'{count:6d} images: {elapsed:7.1f} s wall (process, '
                  f'incl. start-up), {count / elapsed:7.1f} images/s, peak '
                  f'RSS {rss_kib / 1024:8.1f} MiB, mAP '
                  f'{overall_map(metrics):.2f}')
    (c0, _, r0, _), (c1, _, r1, _) = rows[0], rows[-1]
    growth = (r1 - r0) / max(c1 - c0, 1)
    stored = 2 * 80 * 4 / 1024
    print(f'peak RSS growth: {growth:.2f} KiB per image ({c0} -> {c1} '
          f'images); the stored scores are {stored:.2f} KiB per image')
    if growth > args.max_growth_kib:
        print(f'FAIL: more than {args.max_growth_kib} KiB per image')
        return 1
    print('PASS')
    return 0


def cli():
    """``python tools/analysis/eval_load.py``."""
    sys.exit(main())


if __name__ == '__main__':
    cli()
