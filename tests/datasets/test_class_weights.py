"""Class rarity / class weights / sample weights against the formulas."""
import math

import numpy as np
import pytest

from lmclip_mm.datasets.class_weights import (class_rarity, class_weights,
                                              sample_weights)


def voc_train(voc_root):
    """Plain reading of the VOC-MLT train list: ids per image."""
    rows = []
    with open(voc_root / 'longtail2012' / 'voc_lt_train.txt') as f:
        for line in f:
            fields = line.split()
            if fields:
                rows.append([int(t) for t in fields[1:]])
    return rows


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

    np.testing.assert_allclose(class_rarity(counts, n_images), r, rtol=1e-12)
    np.testing.assert_allclose(
        class_weights(counts, n_images, power), cw, rtol=1e-12)
    np.testing.assert_allclose(
        sample_weights(rows, counts, n_images, power), sw, rtol=1e-12)


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
