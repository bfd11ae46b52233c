"""A validation split held out of a long-tailed multi-label train list.

The val images are drawn by **multi-label iterative stratification**
(Sechidis, Tsoumakas & Vlahavas, ECML PKDD 2011) as implemented by the
maintained ``iterative-stratification`` package
(``iterstrat.ml_stratifiers.MultilabelStratifiedShuffleSplit``): the rarest
classes are placed first, so that every class keeps about ``val_fraction``
of its images in val where its count allows (a class with 4 images and a
fraction of 0.1 keeps 0 or 1 of them in val). The same ``(labels,
val_fraction, val_seed)`` always gives the same split (numpy's legacy
``RandomState``, whose stream numpy keeps stable).
"""
import numbers
from typing import Dict, List, Sequence

import numpy as np


def check_val_args(val_fraction, val_seed) -> None:
    """Raise ``ValueError`` for a fraction outside (0, 1) or a bad seed."""
    if isinstance(val_fraction, bool) or not isinstance(
            val_fraction, numbers.Real) or not 0 < val_fraction < 1:
        raise ValueError('val_fraction must be a number in (0, 1), got '
                         f'{val_fraction!r}')
    if isinstance(val_seed, bool) or not isinstance(
            val_seed, numbers.Integral) or not 0 <= val_seed < 2**32:
        raise ValueError('val_seed must be an int in [0, 2**32), got '
                         f'{val_seed!r}')


def label_matrix(label_sets: Sequence[Sequence[int]],
                 num_classes: int) -> np.ndarray:
    """``(N, C)`` boolean indicator matrix of the images' classes."""
    y = np.zeros((len(label_sets), num_classes), dtype=bool)
    for i, labels in enumerate(label_sets):
        y[i, list(labels)] = True
    return y


def stratified_val_indices(label_sets: Sequence[Sequence[int]],
                           num_classes: int,
                           val_fraction: float = 0.1,
                           val_seed: int = 0) -> np.ndarray:
    """Sorted indices (into ``label_sets``) of the held-out val images.

    Args:
        label_sets: the class ids of each train image (each non-empty).
        num_classes: ``C``.
        val_fraction: the share of images to hold out, in (0, 1). The
            algorithm hits it approximately (VOC-MLT, 0.1: 111 of 1,142).
        val_seed: seed of the tie-breaking and of the initial shuffle.

    Raises:
        ValueError: bad arguments, or a fraction that leaves no image on
            one side.
    """
    check_val_args(val_fraction, val_seed)
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
    n = len(label_sets)
    n_val = int(np.ceil(val_fraction * n))
    if n < 2 or n_val < 1 or n_val >= n:
        raise ValueError(
            f'val_fraction={val_fraction} of {n} train images leaves no '
            'image in val or none in train')
    y = label_matrix(label_sets, num_classes)
    if y.shape[1] < 2:  # the package wants a multilabel-indicator target
        y = np.concatenate([y, ~y], axis=1)
    splitter = MultilabelStratifiedShuffleSplit(
        n_splits=1, test_size=val_fraction, random_state=int(val_seed))
    _, val = next(splitter.split(np.zeros((n, 1)), y))
    return np.sort(val)


def val_split_table(label_sets: Sequence[Sequence[int]],
                    num_classes: int,
                    val_indices: Sequence[int]) -> List[Dict[str, int]]:
    """Per class: ``total`` (full train list), ``train`` and ``val``."""
    y = label_matrix(label_sets, num_classes)
    is_val = np.zeros(len(label_sets), dtype=bool)
    is_val[np.asarray(val_indices, dtype=np.int64)] = True
    total = y.sum(axis=0)
    val = y[is_val].sum(axis=0)
    return [
        dict(total=int(t), train=int(t - v), val=int(v))
        for t, v in zip(total, val)
    ]
