"""Per-class counts of the held-out validation split (split='val').

    python tools/dataset_converters/val_split_report.py VOCMLT data/voc_mlt
    python tools/dataset_converters/val_split_report.py \\
        COCOMLT data/coco_mlt [--val-fraction 0.1] [--val-seed 0] \\
        [--format markdown|tsv]
    python tools/dataset_converters/val_split_report.py \\
        LongTailMultiLabelDataset data/my_lt --labels-file my_labels.txt \\
        --train-file my_train.txt --test-file my_test.txt

For every class: its head/middle/tail group (from the full train list), n_c
in the full train list, and how many of those images the held-out train
split (``split='train', holdout_val=True``) and the val split
(``split='val'``) keep. Only the list files are read (no image is opened).
"""
import argparse
import sys

from lmclip_mm.datasets.val_split import val_split_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('type', help='dataset type: VOCMLT, COCOMLT, ToyMLT '
                        'or LongTailMultiLabelDataset')
    parser.add_argument('data_root', help='the dataset folder')
    parser.add_argument('--val-fraction', type=float, default=0.1,
                        help='share of the train list held out (default 0.1)')
    parser.add_argument('--val-seed', type=int, default=0,
                        help='seed of the draw (default 0)')
    parser.add_argument('--labels-file', help='LongTailMultiLabelDataset only')
    parser.add_argument('--train-file', help='LongTailMultiLabelDataset only')
    parser.add_argument('--test-file', help='LongTailMultiLabelDataset only')
    parser.add_argument('--format', choices=('markdown', 'tsv'),
                        default='markdown')
    return parser.parse_args(argv)


def build_val_dataset(args):
    import lmclip_mm  # noqa: F401  registers the datasets
    from mmpretrain.registry import DATASETS
    cfg = dict(type=args.type, data_root=args.data_root, split='val',
               val_fraction=args.val_fraction, val_seed=args.val_seed,
               check_images=False, pipeline=[])
    for key in ('labels_file', 'train_file', 'test_file'):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
    return DATASETS.build(cfg)


def report(dataset):
    """``(rows, summary)`` of a ``split='val'`` dataset; rows are
    ``(id, name, group, n_c, train, val)``, most frequent class first."""
    from lmclip_mm.datasets.mlt_format import parse_split_file
    meta = dataset.metainfo
    classes = meta['classes']
    train = parse_split_file(dataset.train_file, len(classes))
    table = val_split_table([r.labels for r in train], len(classes),
                            dataset.val_indices)
    group = {}
    for name in ('head', 'middle', 'tail'):
        for c in meta[f'{name}_classes']:
            group[c] = name
    rows = [(c, classes[c], group[c], row['total'], row['train'], row['val'])
            for c, row in enumerate(table)]
    rows.sort(key=lambda r: (-r[3], r[0]))  # by train frequency
    n_val = len(dataset.val_indices)
    summary = (f'{type(dataset).__name__}: {n_val} of '
               f'{len(train)} train images held out as val '
               f'(val_fraction={dataset.val_fraction}, '
               f'val_seed={dataset.val_seed}); classes without a val image: '
               f'{sum(1 for r in rows if r[5] == 0)}')
    return rows, summary


def main(argv=None):
    args = parse_args(argv)
    try:
        dataset = build_val_dataset(args)
    except (ValueError, OSError, KeyError) as e:
        print(f'val_split_report: {e}', file=sys.stderr)
        return 1
    rows, summary = report(dataset)
    header = ('id', 'class', 'group', 'n_c (train list)', 'train', 'val')
    if args.format == 'tsv':
        print('\t'.join(header))
        for r in rows:
            print('\t'.join(map(str, r)))
    else:
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '---|' * len(header))
        for r in rows:
            print('| ' + ' | '.join(map(str, r)) + ' |')
    print(summary)
    return 0


def cli():
    """``python tools/dataset_converters/val_split_report.py``."""
    sys.exit(main())


if __name__ == '__main__':
    cli()
