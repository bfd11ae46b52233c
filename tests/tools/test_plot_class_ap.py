"""tools/analysis/plot_class_ap.py: the figure's elements (issue 15,
item 13), checked on the matplotlib objects of the rendered figure."""
import json

import pytest
from lmclip_testing import REPO


@pytest.fixture(scope='module')
def mod():
    from lmclip_tools.analysis import plot_class_ap
    return plot_class_ap


# 20 toy-like classes from 4 to 280 train images; the rightmost point has
# a long name (it must not run off the right edge), two points are close
TOY_COUNTS = [4, 5, 6, 8, 10, 12, 15, 19, 24, 30, 37, 47, 59, 73, 92, 114,
              143, 179, 224, 280]
TOY_AP = [47, 69, 64, 68, 84, 79, 65, 63, 64, 88, 75, 95, 80, 73, 100, 96,
          85, 100, 99.5, 94]


def _meta(counts, names=None):
    from lmclip_mm.datasets.class_stats import class_groups
    head, middle, tail = class_groups(counts)
    names = names or [f'class {i}' for i in range(len(counts))]
    return dict(classes=names, class_counts=counts, head_classes=head,
                middle_classes=middle, tail_classes=tail)


def _names():
    names = [f'colour shape {i}' for i in range(20)]
    names[-1] = 'a rather long class name at the right edge'
    return names


def test_threshold_lines_ticks_and_legend(mod):
    fig = mod.make_figure(TOY_AP, _meta(TOY_COUNTS, _names()))
    ax = fig.axes[0]
    vlines = sorted(line.get_xdata()[0] for line in ax.get_lines()
                    if line.get_xdata()[0] == line.get_xdata()[1]
                    and tuple(line.get_ydata()) == (0, 1))
    assert vlines == [20, 100]
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ['5', '10', '20', '50', '100', '200']
    assert [t.get_text() for t in ax.get_xticklabels(minor=True)
            if t.get_text()] == []
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        '0', '20', '40', '60', '80', '100']
    assert ax.get_xscale() == 'log'
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ['head: 5 classes, mAP 94.9',
                      'middle: 7 classes, mAP 82.1',
                      'tail: 8 classes, mAP 67.4']
    groups = [t.get_text() for t in ax.texts
              if not isinstance(t, mod.matplotlib.text.Annotation)]
    assert groups == ['tail', 'middle', 'head']
    mod.plt.close(fig)


def test_point_labels_stay_inside_the_axes_and_apart(mod):
    fig = mod.make_figure(TOY_AP, _meta(TOY_COUNTS, _names()))
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    labels = [t for t in ax.texts if t.get_text() not in (
        'tail', 'middle', 'head')]
    assert sorted(t.get_text() for t in labels) == sorted(_names())
    boxes = [t.get_window_extent(renderer) for t in labels]
    for text, bb in zip(labels, boxes):
        assert text.get_fontsize() >= 7
        assert box.x0 <= bb.x0 and bb.x1 <= box.x1, text.get_text()
        assert box.y0 <= bb.y0 and bb.y1 <= box.y1, text.get_text()
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap_x = min(a.x1, b.x1) - max(a.x0, b.x0)
            overlap_y = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert overlap_x <= 0 or overlap_y <= 0.5
    # the long name at the right edge is on the left of its point
    long = labels[[t.get_text() for t in labels].index(_names()[-1])]
    assert long.get_horizontalalignment() == 'right'
    mod.plt.close(fig)


def test_singular_groups_and_missing_ap(mod):
    meta = _meta([150, 50, 5, 6])
    fig = mod.make_figure([90.0, 80.0, 50.0, float('nan')], meta)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ['head: 1 class, mAP 90.0', 'middle: 1 class, mAP 80.0',
                      'tail: 1 class, mAP 50.0']
    mod.plt.close(fig)
    # many classes: points only, no names
    counts = [2 + 13 * i for i in range(80)]
    fig = mod.make_figure([50.0] * 80, _meta(counts))
    assert [t.get_text() for t in fig.axes[0].texts] == [
        'tail', 'middle', 'head']
    mod.plt.close(fig)


def test_the_tool_writes_the_figure(tmp_path, tool):
    """End to end: config + metrics JSON -> PNG, through the tool."""
    from lmclip_mm.datasets.toy_mlt import generate_toy_mlt
    root = tmp_path / 'toy'
    generate_toy_mlt(str(root), seed=0)
    results = tmp_path / 'metrics.json'
    results.write_text(json.dumps({'long-tail/AP_classwise': TOY_AP}))
    out = tmp_path / 'ap.png'
    proc = tool(['analysis/plot_class_ap.py',
                 REPO / 'configs' / 'lmclip_toy_mlt_tiny.py', results,
                 '--out', out, '--cfg-options',
                 f'test_dataloader.dataset.data_root={root}'])
    assert proc.stdout.strip() == f'wrote {out}'
    from PIL import Image
    with Image.open(out) as img:
        assert img.size[0] > 1000 and img.size[1] > 600
