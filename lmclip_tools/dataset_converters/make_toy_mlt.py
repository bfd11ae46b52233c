"""Generate the toy long-tailed multi-label set (ToyMLT) into a folder.

    python tools/dataset_converters/make_toy_mlt.py data/toy_mlt [--seed 0]

The ToyMLT dataset also generates it on first use; this script does the same
(atomically: safe if a training job starts at the same time) and prints its
figures. An existing complete set of the same seed is left as it is.
"""
import argparse
import os.path as osp
import sys
import time

from lmclip_mm.datasets.class_stats import class_groups, count_classes
from lmclip_mm.datasets.mlt_format import parse_labels_file, parse_split_file
from lmclip_mm.datasets.toy_mlt import (LABELS_FILE, TEST_FILE, TRAIN_FILE,
                                        ensure_toy_mlt)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output folder (e.g. data/toy_mlt)')
    parser.add_argument(
        '--seed', type=int, default=0, help='generator seed (default 0)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        made = ensure_toy_mlt(args.root, seed=args.seed)
    except (ValueError, OSError) as e:
        print(f'make_toy_mlt: {e}', file=sys.stderr)
        return 1
    took = time.perf_counter() - start
    classes = parse_labels_file(osp.join(args.root, LABELS_FILE))
    train = parse_split_file(osp.join(args.root, TRAIN_FILE), len(classes))
    test = parse_split_file(
        osp.join(args.root, TEST_FILE), len(classes), allow_unlabeled=True)
    head, middle, tail = class_groups(
        count_classes([r.labels for r in train], len(classes)))
    state = f'generated in {took:.1f} s' if made else 'already present'
    print(f'ToyMLT (seed {args.seed}) in {args.root}: {state}; '
          f'{len(classes)} classes, {len(train)} train / {len(test)} test '
          f'images, head/middle/tail {len(head)}/{len(middle)}/{len(tail)}')
    return 0


def cli():
    """``python tools/dataset_converters/make_toy_mlt.py``."""
    sys.exit(main())


if __name__ == '__main__':
    cli()
