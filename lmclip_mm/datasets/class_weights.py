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
            An image without any class gets weight 0 (it is never drawn),
            for any power; a dataset where no image has a class is an error.
        power: ``s >= 0``; ``s = 0`` gives every image with a class weight 1.
    """
    if not np.isfinite(power) or power < 0:
        raise ValueError(f'power must be a finite number >= 0, got {power}')
    r = class_rarity(class_counts, num_images)
    raw = np.zeros(len(cat_ids), dtype=np.float64)
    for i, ids in enumerate(cat_ids):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= r.size):
            raise ValueError(f'image {i} has class ids {ids.tolist()} outside '
                             f'0..{r.size - 1}')
        raw[i] = r[ids].sum()
    if raw.size == 0 or raw.max() <= 0:
        raise ValueError('no image has a class: sample weights are all zero')
    # 0 ** 0 would be 1: an image without class keeps weight 0 for any power.
    w = np.where(raw > 0, raw, 1.0)**power * (raw > 0)
    return w / w.max()
