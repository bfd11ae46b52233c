# Copyright (c) lmclip_mm authors.
"""Plot per-class AP against train-split frequency, coloured by group.

Input: the metrics JSON of a test run with per-class AP, e.g.::

    python tools/test.py CONFIG CKPT --out results.json --out-item metrics \
        --cfg-options test_evaluator.classwise=True
    python tools/analysis/plot_class_ap.py CONFIG results.json --out ap.png

The class names, train counts and head/middle/tail groups are read from the
config's test dataset (its ``metainfo``), so the plot shows exactly the
groups the metric used. Images are not needed (the dataset is built with
``check_images=False``).
"""
import argparse
import json
import math

import lmclip_mm  # noqa: F401  registers the datasets
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmpretrain.registry import DATASETS  # noqa: E402

GROUP_COLOURS = (('head', '#1f77b4'), ('middle', '#ff7f0e'),
                 ('tail', '#d62728'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the config of the test run')
    parser.add_argument('results', help='metrics JSON with AP_classwise')
    parser.add_argument('--out', default='class_ap.png', help='PNG to write')
    parser.add_argument(
        '--key',
        default=None,
        help='key of the per-class AP list in the JSON (default: the one '
        'ending in "AP_classwise")')
    parser.add_argument('--title', default=None)
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='as in train.py')
    return parser.parse_args(argv)


def load_class_ap(path, key=None):
    with open(path, encoding='utf-8') as f:
        metrics = json.load(f)
    if key is None:
        keys = [k for k in metrics if k.endswith('AP_classwise')]
        if len(keys) != 1:
            raise KeyError(
                f'{path}: expected one "*AP_classwise" entry, found {keys}. '
                'Run tools/test.py with --cfg-options '
                'test_evaluator.classwise=True --out FILE --out-item metrics')
        key = keys[0]
    if key not in metrics:
        raise KeyError(f'{path}: no key {key!r}; keys: {sorted(metrics)}')
    return [float('nan') if v is None else float(v) for v in metrics[key]]


def dataset_meta(cfg):
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    ds_cfg = cfg.test_dataloader.dataset.copy()
    ds_cfg['pipeline'] = []
    ds_cfg['lazy_init'] = True
    ds_cfg.setdefault('check_images', False)
    return DATASETS.build(ds_cfg).metainfo


def plot(class_ap, meta, out, title=None):
    classes = list(meta['classes'])
    counts = list(meta['class_counts'])
    if len(class_ap) != len(classes):
        raise ValueError(f'{len(class_ap)} AP values for {len(classes)} '
                         'classes: results and config do not match')
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    for group, colour in GROUP_COLOURS:
        idx = [i for i in meta.get(f'{group}_classes', [])
               if not math.isnan(class_ap[i])]
        if not idx:
            continue
        mean = sum(class_ap[i] for i in idx) / len(idx)
        ax.scatter([counts[i] for i in idx], [class_ap[i] for i in idx],
                   c=colour, label=f'{group} ({len(idx)} classes, '
                   f'mAP {mean:.2f})', s=28, zorder=3)
    if len(classes) <= 40:
        for i, name in enumerate(classes):
            if not math.isnan(class_ap[i]):
                ax.annotate(name, (counts[i], class_ap[i]), fontsize=6,
                            xytext=(3, 2), textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlabel('train images containing the class (log scale)')
    ax.set_ylabel('AP (%)')
    ax.set_ylim(0, 102)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(loc='lower right')
    ax.set_title(title or 'Per-class AP against train frequency')
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    class_ap = load_class_ap(args.results, args.key)
    plot(class_ap, dataset_meta(cfg), args.out, args.title)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
