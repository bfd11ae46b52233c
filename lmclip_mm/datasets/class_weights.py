"""Class-rarity weights shared by the sampler and the loss (LM-CLIP).

With ``N`` train images and ``n_c`` train images that contain class ``c``:

* raw class weight ``r_c = N / n_c``;
* class weight (used by :class:`BalancedAsymmetricLoss`):
  ``w_c = r_c ** s / max_k(r_k ** s)``;
* sample weight of image ``i`` (used by :class:`ClassAwareRepeatSampler`):
  ``(sum_{c in y_i} r_c) ** s``, normalised by its maximum over the images.

Both use the same power ``s``. This module is the one place they are
computed.
"""
from typing import Sequence

import numpy as np


def _check_counts(class_counts: Sequence[int], num_images: int) -> np.ndarray:
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError('class_counts must be a non-empty 1-D sequence, got '
                         f'shape {counts.shape}')
    if num_images <= 0:
        raise ValueError(f'num_images must be positive, got {num_images}')
    if (counts <= 0).any():
        empty = np.flatnonzero(counts <= 0).tolist()
        raise ValueError(
            f'classes {empty} have no train image; class rarity N / n_c is '
            'undefined for them')
    if (counts > num_images).any():
        raise ValueError('a class count exceeds the number of images '
                         f'({counts.max():.0f} > {num_images})')
    return counts


def class_rarity(class_counts: Sequence[int], num_images: int) -> np.ndarray:
    """Raw class weights ``r_c = N / n_c`` (float64 array of length C)."""
    return num_images / _check_counts(class_counts, num_images)


def class_weights(class_counts: Sequence[int], num_images: int,
                  power: float) -> np.ndarray:
    """Loss class weights ``r_c ** s / max(r ** s)`` (float64, length C)."""
    w = class_rarity(class_counts, num_images)**power
    return w / w.max()


def sample_weights(cat_ids: Sequence[Sequence[int]],
                   class_counts: Sequence[int], num_images: int,
                   power: float) -> np.ndarray:
    """Sampler weights ``(sum_{c in y_i} r_c) ** s`` normalised by the max.

    Args:
        cat_ids: the class indices of each image (one sequence per image).
            An image without any class gets weight 0 (it is never drawn)
            only if every other image has a class; an all-empty dataset is an
            error.
    """
    r = class_rarity(class_counts, num_images)
    raw = np.array([r[np.asarray(ids, dtype=np.int64)].sum() if len(ids) else
                    0.0 for ids in cat_ids], dtype=np.float64)
    if raw.size == 0 or raw.max() <= 0:
        raise ValueError('no image has a class: sample weights are all zero')
    w = raw**power
    return w / w.max()
