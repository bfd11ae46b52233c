"""lmclip_mm.datasets.class_stats, the one home of the class statistics,
against values computed independently (plain loops, collections.Counter,
numpy on the list files), and the statistics the datasets publish."""
import math
from collections import Counter

import numpy as np
import pytest

from lmclip_mm.datasets import (COCOMLT, VOCMLT, DatasetFormatError,
                                LongTailMultiLabelDataset,
                                ToyMLT, class_rarity, class_weights,
                                sample_weights)
from lmclip_mm.datasets.class_stats import (class_groups, count_classes,
                                            long_tail_stats, repeat_rates)
from lmclip_mm.datasets.toy_mlt import TRAIN_FILE
from lmclip_testing import read_split


def voc_train(voc_root):
    return [ids for _, ids in
            read_split(voc_root / 'longtail2012' / 'voc_lt_train.txt')]


def counter_counts(rows, num_classes):
    """``n_c`` with collections.Counter (an image counts once per class)."""
    n = Counter(c for ids in rows for c in set(ids))
    return [n[c] for c in range(num_classes)]


def groups_of(counts, head=100, tail=20):
    counts = np.asarray(counts)
    return (np.flatnonzero(counts >= head).tolist(),
            np.flatnonzero((counts >= tail) & (counts < head)).tolist(),
            np.flatnonzero(counts < tail).tolist())


# --------------------------------------------------------------- formulas
@pytest.mark.parametrize('power', [0.0, 0.5, 1.0, 1.7])
def test_formulas_on_real_voc_split(voc_root, power):
    rows = voc_train(voc_root)
    n_images = len(rows)
    counts = [0] * 20
    for ids in rows:
        for c in ids:
            counts[c] += 1
    # expected values with plain Python loops
    r = [n_images / n for n in counts]
    cw = [x**power for x in r]
    cw = [x / max(cw) for x in cw]
    sw = [sum(r[c] for c in ids)**power for ids in rows]
    sw = [x / max(sw) for x in sw]

    assert count_classes(rows, 20) == counts
    np.testing.assert_allclose(class_rarity(counts, n_images), r, rtol=1e-12)
    np.testing.assert_allclose(
        class_weights(counts, n_images, power), cw, rtol=1e-12)
    np.testing.assert_allclose(
        sample_weights(rows, counts, n_images, power), sw, rtol=1e-12)
    rates = repeat_rates(rows, power)
    assert rates.classes == list(range(20))
    assert rates.class_counts == counts and rates.num_images == n_images
    np.testing.assert_allclose(rates.weights, sw, rtol=1e-12)


def test_small_example():
    # N = 4 images, n = [3, 1]: r = [4/3, 4]
    cat_ids = [[0], [0, 1], [0], []]
    w = sample_weights(cat_ids, [3, 1], 4, power=1)
    raw = [4 / 3, 4 / 3 + 4, 4 / 3, 0]
    np.testing.assert_allclose(w, [x / max(raw) for x in raw])
    np.testing.assert_allclose(
        class_weights([3, 1], 4, power=2), [(4 / 3)**2 / 16, 1.0])


def test_unlabeled_image_never_weighted_even_at_power_zero():
    w = sample_weights([[0], [], [1]], [1, 1], 3, power=0)
    assert w.tolist() == [1.0, 0.0, 1.0]
    assert repeat_rates([[0], [], [1]], 0).weights.tolist() == [1.0, 0.0, 1.0]


def test_errors():
    with pytest.raises(ValueError, match='power'):
        sample_weights([[0]], [1], 1, power=-1)
    with pytest.raises(ValueError, match='power'):
        sample_weights([[0]], [1], 1, power=math.nan)
    with pytest.raises(ValueError, match='outside 0..1'):
        sample_weights([[0], [2]], [1, 1], 2, power=1)
    with pytest.raises(ValueError, match='outside 0..1'):
        sample_weights([[0], [-1]], [1, 1], 2, power=1)
    with pytest.raises(ValueError, match='all zero'):
        sample_weights([[], []], [1], 2, power=1)
    with pytest.raises(ValueError, match='no train image'):
        class_rarity([3, 0], 4)
    with pytest.raises(ValueError, match='num_images'):
        class_rarity([3], 0)
    with pytest.raises(ValueError, match='exceeds'):
        class_rarity([5], 4)
    with pytest.raises(ValueError, match='outside 0..2'):
        count_classes([[0], [3]], 3)
    with pytest.raises(ValueError, match='outside 0..2'):
        count_classes([[-1]], 3)
    with pytest.raises(ValueError, match='no image of the dataset has'):
        repeat_rates([[], []], 1)
    with pytest.raises(ValueError, match='negative'):
        repeat_rates([[-1, 0]], 1)
    with pytest.raises(ValueError, match='held-out'):
        long_tail_stats([[0], [0]], 1, held_out=[2])


# ------------------------------------------------------- counts and groups
def test_count_classes_and_groups():
    # an id repeated on one image counts once; an image without id: none
    assert count_classes([(0, 1), (0, ), (), (1, 1)], 3) == [2, 2, 0]
    # boundaries: n >= head -> head; tail <= n < head -> middle; n < tail
    counts = [100, 99, 20, 19, 0, 250]
    assert class_groups(counts) == ([0, 5], [1, 2], [3, 4])
    assert class_groups(counts) == groups_of(counts)
    assert class_groups(counts, head_threshold=20, tail_threshold=1) == (
        [0, 1, 2, 5], [3], [4])
    with pytest.raises(ValueError, match='tail_threshold'):
        class_groups(counts, head_threshold=10, tail_threshold=20)


def test_repeat_rates_classes_absent_play_no_part():
    # class 1 occurs in no image: r over the classes present only
    rows = [[0], [2, 0], [2], [0, 0]]
    rates = repeat_rates(rows, 1.0)
    assert rates.classes == [0, 2] and rates.class_counts == [3, 2]
    r = {0: 4 / 3, 2: 4 / 2}
    raw = [r[0], r[0] + r[2], r[2], r[0]]
    np.testing.assert_allclose(rates.weights, np.array(raw) / max(raw))


def test_long_tail_stats_trained_images_and_full_list_groups():
    rng = np.random.default_rng(0)
    y = rng.random((400, 6)) < np.array([0.6, 0.3, 0.1, 0.05, 0.04, 0.02])
    y[np.arange(6), np.arange(6)] = True  # every class occurs
    rows = [np.flatnonzero(r).tolist() for r in y]
    held = rng.choice(400, 40, replace=False)
    keep = np.ones(400, bool)
    keep[held] = False
    stats = long_tail_stats(rows, 6, held, head_threshold=50,
                            tail_threshold=15)
    # counts over the images trained on (numpy on the indicator matrix)
    assert stats.class_counts == y[keep].sum(0).tolist()
    assert stats.num_train_images == 360
    # groups over the full list
    assert stats.train_list_counts == y.sum(0).tolist()
    assert stats.num_train_list_images == 400
    assert (stats.head_classes, stats.middle_classes, stats.tail_classes) \
        == groups_of(y.sum(0), 50, 15)
    meta = stats.metainfo()
    assert set(meta) == {'class_counts', 'num_train_images', 'head_classes',
                         'middle_classes', 'tail_classes'}
    # no held-out image: the paper's protocol, everything from the full list
    for held_out in (None, []):
        paper = long_tail_stats(rows, 6, held_out)
        assert paper.class_counts == paper.train_list_counts \
            == y.sum(0).tolist()
        assert paper.num_train_images == 400


# ------------------------------------------------- what the datasets publish
def _joined(ds, path):
    from mmengine.fileio import join_path
    return join_path(ds.img_prefix, path)


def _check_protocols(build, list_file, num_classes):
    rows = read_split(list_file)
    full_rows = [ids for _, ids in rows]
    full_counts = counter_counts(full_rows, num_classes)
    groups = groups_of(full_counts)
    paper = build(split='train')
    honest = build(split='train', holdout_val=True)
    val = build(split='val')
    test = build(split='test')
    # paper's protocol: the full train list, as always
    assert paper.metainfo['class_counts'] == full_counts
    assert paper.metainfo['num_train_images'] == len(rows)
    # honest protocol: counted over the images trained on
    trained = [ids for path, ids in rows
               if _joined(honest, path) in
               {honest.get_data_info(i)['img_path']
                for i in range(len(honest))}]
    assert len(trained) == len(honest) < len(rows)
    for ds in (honest, val):
        assert ds.metainfo['class_counts'] == counter_counts(
            trained, num_classes)
        assert ds.metainfo['num_train_images'] == len(trained)
    assert test.metainfo['class_counts'] == full_counts
    # groups: the benchmark's, from the full list, in every split
    for ds in (paper, honest, val, test):
        assert (ds.metainfo['head_classes'], ds.metainfo['middle_classes'],
                ds.metainfo['tail_classes']) == groups
        assert ds.train_list_counts == full_counts
        assert ds.num_train_list_images == len(rows)
    return paper, honest


def test_toy_protocols(toy_root):
    paper, honest = _check_protocols(
        lambda **kw: ToyMLT(data_root=str(toy_root), check_images=False,
                            **kw),
        toy_root / TRAIN_FILE, 20)
    assert (len(paper), len(honest)) == (804, 728)


def test_voc_mlt_protocols(voc_root):
    _, honest = _check_protocols(
        lambda **kw: VOCMLT(data_root=str(voc_root), check_images=False,
                            **kw),
        voc_root / 'longtail2012' / 'voc_lt_train.txt', 20)
    assert len(honest) == 1142 - 111
    # motorbike (20 train images) stays middle although 18 are trained on
    motorbike = honest.metainfo['classes'].index('motorbike')
    assert honest.metainfo['class_counts'][motorbike] < 20
    assert motorbike in honest.metainfo['middle_classes']


def test_coco_mlt_protocols(coco_root):
    _, honest = _check_protocols(
        lambda **kw: COCOMLT(data_root=str(coco_root), check_images=False,
                             **kw),
        coco_root / 'longtail2017' / 'coco_lt_train.txt', 80)
    assert len(honest) == 1909 - 202


def test_val_split_that_empties_a_class_warns(tmp_path):
    from .conftest import tiny_args, write_set

    # two images, one held out: whichever it is, the image trained on lacks
    # class 1 or class 2 (count 0: its rarity N / n_c is undefined)
    root = write_set(tmp_path / 's', labels='a 0\nb 1\nc 2\n',
                     train='x.jpg 0 1\ny.jpg 0 2\n', test='z.jpg 0\n',
                     captions=None, images=False)
    args = tiny_args(root, captions_file=None, check_images=False)
    for kw in (dict(split='val'), dict(split='train', holdout_val=True)):
        with pytest.warns(UserWarning, match='holds every train image of'):
            ds = LongTailMultiLabelDataset(**args, val_fraction=0.5, **kw)
        counts = ds.metainfo['class_counts']
        assert counts[0] == 1 and sorted(counts[1:]) == [0, 1]
        assert ds.metainfo['num_train_images'] == 1
    # the full list's groups and counts are unaffected
    assert ds.metainfo['tail_classes'] == [0, 1, 2]
    assert ds.train_list_counts == [2, 1, 1]


def test_a_class_without_train_image_is_one_clear_error(tmp_path):
    from .conftest import tiny_args, write_set

    root = write_set(tmp_path / 's', labels='a 0\nb 1\nc 2\n',
                     train='x.jpg 0 1\ny.jpg 0\n', test='z.jpg 0\n',
                     captions=None, images=False)
    args = tiny_args(root, captions_file=None, check_images=False)
    with pytest.raises(DatasetFormatError) as e:
        LongTailMultiLabelDataset(**args)
    message = str(e.value)
    assert message.startswith(f"{root / 'train.txt'}: no train image has "
                              f"class 2 ('c') (defined in {root / 'labels'}")
    assert 'rarity N / n_c is undefined' in message
