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

The figure: one point per class (AP against its number of training images,
log axis with 1-2-5 ticks), coloured and shaped by group (colour-blind safe,
also readable in greyscale), dashed lines at the group thresholds (20 and
100 by default) with the shaded tail/middle/head regions named above the
axes, each class's name next to its point (up to 40 classes; kept inside
the axes and apart), and below the axes a legend with each group's class
count and mAP. ``--out`` may end in .png (200 dpi), .pdf or .svg.
"""
import argparse
import json
import math

import lmclip_mm  # noqa: F401  registers the datasets
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmpretrain.registry import DATASETS  # noqa: E402

#: group -> (colour, marker): colour-blind safe (Okabe-Ito) and told apart
#: by the marker in greyscale print too
GROUP_STYLE = {'head': ('#0072B2', 'o'), 'middle': ('#E69F00', 's'),
               'tail': ('#D55E00', '^')}
#: the most classes whose points are labelled with their names
MAX_LABELLED = 40


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
    """The test dataset's metainfo, plus its group thresholds."""
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    ds_cfg = cfg.test_dataloader.dataset.copy()
    ds_cfg['pipeline'] = []
    ds_cfg['lazy_init'] = True
    ds_cfg.setdefault('check_images', False)
    dataset = DATASETS.build(ds_cfg)
    meta = dict(dataset.metainfo)
    for key, default in (('head_threshold', 100), ('tail_threshold', 20)):
        meta.setdefault(key, getattr(dataset, key, ds_cfg.get(key, default)))
    return meta


def _plural(n, word):
    return f'{n} {word}' if n == 1 else f'{n} {word}es' if word.endswith(
        's') else f'{n} {word}s'


def _count_ticks(lo, hi):
    """1-2-5 ticks of a log axis from lo to hi (plain numbers)."""
    ticks, decade = [], 1
    while decade <= hi * 10:
        ticks += [m * decade for m in (1, 2, 5) if lo <= m * decade <= hi]
        decade *= 10
    return ticks


def _place_labels(fig, ax, texts, points, max_rounds=60):
    """Keep the point labels inside the axes and off each other: a label
    near the right edge goes to the left of its point, then overlapping
    labels are pushed apart vertically (in display pixels)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    for text in texts:
        bb = text.get_window_extent(renderer)
        if bb.x1 > box.x1 - 2:
            text.set_horizontalalignment('right')
            text.xyann = (-4, text.xyann[1])
    to_pt = 72 / fig.dpi  # offsets are in points, extents in pixels

    def clamp(text):  # nothing may leave the axes
        bb = text.get_window_extent(renderer)
        dx, dy = text.xyann
        if bb.y1 > box.y1:
            dy -= (bb.y1 - box.y1 + 1) * to_pt
        if bb.y0 < box.y0:
            dy += (box.y0 - bb.y0 + 1) * to_pt
        if bb.x0 < box.x0:
            dx += (box.x0 - bb.x0 + 1) * to_pt
        if bb.x1 > box.x1:
            dx -= (bb.x1 - box.x1 + 1) * to_pt
        text.xyann = (dx, dy)

    for _ in range(max_rounds):
        for text in texts:
            clamp(text)
        boxes = [t.get_window_extent(renderer) for t in texts]
        moved = False
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                a, b = boxes[i], boxes[j]
                if min(a.x1, b.x1) <= max(a.x0, b.x0) or \
                        min(a.y1, b.y1) <= max(a.y0, b.y0):
                    continue
                # overlap: move the upper one up, the lower one down (one
                # at the top of the axes only goes down: clamp)
                shift = (min(a.y1, b.y1) - max(a.y0, b.y0)) / 2 + 1
                up, down = (i, j) if a.y0 + a.y1 >= b.y0 + b.y1 else (j, i)
                for k, sign in ((up, 1), (down, -1)):
                    dx, dy = texts[k].xyann
                    texts[k].xyann = (dx, dy + sign * shift * to_pt)
                    boxes[k] = texts[k].get_window_extent(renderer)
                moved = True
        if not moved:
            break


def make_figure(class_ap, meta, title=None, labels=None):
    """The per-class AP figure (matplotlib ``Figure``).

    ``labels``: label each point with its class name (default: when there
    are at most :data:`MAX_LABELLED` classes).
    """
    classes = list(meta['classes'])
    counts = list(meta['class_counts'])
    if len(class_ap) != len(classes):
        raise ValueError(f'{len(class_ap)} AP values for {len(classes)} '
                         'classes: results and config do not match')
    head_t = meta.get('head_threshold', 100)
    tail_t = meta.get('tail_threshold', 20)
    plt.rcParams.update({'font.size': 9, 'axes.labelsize': 10,
                         'legend.fontsize': 8.5, 'xtick.labelsize': 9,
                         'ytick.labelsize': 9})
    fig, ax = plt.subplots(figsize=(7.0, 4.3), dpi=150)
    shown = [i for i in range(len(classes)) if not math.isnan(class_ap[i])]
    xs = [max(counts[i], 1) for i in shown] or [1, 1000]
    lo, hi = min(xs + [tail_t]) / 1.6, max(xs + [head_t]) * 1.6
    ax.set_xscale('log')
    ax.set_xlim(lo, hi)
    ax.set_ylim(-3, 103)
    # group regions and their thresholds
    for x0, x1, group in ((lo, tail_t, 'tail'), (tail_t, head_t, 'middle'),
                          (head_t, hi, 'head')):
        ax.axvspan(x0, x1, color=GROUP_STYLE[group][0], alpha=0.06, lw=0,
                   zorder=0)
        ax.text(math.sqrt(max(x0, lo) * min(x1, hi)), 1.01, group,
                transform=ax.get_xaxis_transform(), ha='center',
                va='bottom', fontsize=9, color='0.3')
    for t in (tail_t, head_t):
        ax.axvline(t, color='0.4', ls='--', lw=0.9, zorder=1,
                   label='_threshold')
    for group, (colour, marker) in GROUP_STYLE.items():
        idx = [i for i in meta.get(f'{group}_classes', [])
               if not math.isnan(class_ap[i])]
        if not idx:
            continue
        mean = sum(class_ap[i] for i in idx) / len(idx)
        ax.scatter([max(counts[i], 1) for i in idx],
                   [class_ap[i] for i in idx], c=colour, marker=marker,
                   s=30, edgecolors='white', linewidths=0.5, zorder=3,
                   label=f'{group}: {_plural(len(idx), "class")}, '
                   f'mAP {mean:.1f}')
    texts, points = [], []
    if labels if labels is not None else len(shown) <= MAX_LABELLED:
        for i in shown:
            texts.append(ax.annotate(
                classes[i], (max(counts[i], 1), class_ap[i]), fontsize=7,
                xytext=(4, 0), textcoords='offset points', va='center',
                color='0.15', zorder=4))
            points.append(i)
    ticks = _count_ticks(lo, hi)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f'{t:,}' for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel('training images containing the class (log scale)')
    ax.set_ylabel('AP (%)')
    ax.grid(True, which='major', color='0.88', lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    for side in ('top', 'right'):
        ax.spines[side].set_visible(False)
    fig.legend(*ax.get_legend_handles_labels(), loc='lower center', ncol=3,
               frameon=False, handletextpad=0.3, columnspacing=1.8,
               bbox_to_anchor=(0.5, 0.0))
    if title:
        ax.set_title(title, pad=18)
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # the legend below the axes
    if texts:
        _place_labels(fig, ax, texts, points)
    return fig


def plot(class_ap, meta, out, title=None, labels=None):
    """Write the figure of :func:`make_figure` to ``out`` (PNG, PDF, SVG,
    ... by its extension)."""
    fig = make_figure(class_ap, meta, title, labels)
    fig.savefig(out, dpi=200, bbox_inches='tight')
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    class_ap = load_class_ap(args.results, args.key)
    plot(class_ap, dataset_meta(cfg), args.out, args.title)
    print(f'wrote {args.out}')


def cli():
    """``python tools/analysis/plot_class_ap.py``."""
    main()


if __name__ == '__main__':
    cli()
