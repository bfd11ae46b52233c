"""The long-tail class statistics: the one place they are computed.

With ``N`` images and ``n_c`` of them containing class ``c`` (an image
counts once per class, however often the class is listed):

* class counts ``n_c`` and ``N``: :func:`count_classes`;
* head / middle / tail groups (head ``n_c >= 100``, middle
  ``20 <= n_c < 100``, tail ``n_c < 20``, the VOC-MLT / COCO-MLT
  thresholds): :func:`class_groups`;
* raw class weight (class rarity) ``r_c = N / n_c``: :func:`class_rarity`;
* loss class weight (:class:`BalancedAsymmetricLoss`)
  ``w_c = r_c ** s / max_k(r_k ** s)``: :func:`class_weights`;
* sampler weight (repeat rate) of image ``i``
  (:class:`ClassAwareRepeatSampler`) ``(sum_{c in y_i} r_c) ** s``,
  normalised by its maximum over the images: :func:`sample_weights`, and
  :func:`repeat_rates`, which counts ``n_c`` and ``N`` over the images it
  is given;
* the statistics a long-tailed dataset publishes in its ``metainfo``:
  :func:`long_tail_stats`.

Which images are counted (the honest protocol). The loss class weights
and the sampler's repeat rates are both counted over the images actually
trained on: the full train list in the paper's protocol, the train list
without the held-out validation images with ``holdout_val=True``. The
dataset's ``metainfo['class_counts']`` / ``['num_train_images']`` (which
:class:`~lmclip_mm.engine.hooks.DatasetMetaHook` hands to the model for
the loss) are those counts, and the sampler counts the same images (the
train split it draws from), so loss and sampler use the same ``n_c`` and
``N`` in both protocols.

The head / middle / tail groups are not a training statistic but the
benchmark's definition of the reported group mAPs: VOC-MLT and COCO-MLT
define them on the FULL train list, so they are always counted there, in
both protocols (holding 10 % out would move classes across the
thresholds, e.g. VOC-MLT's motorbike from 20 to 18 images, and the test
groups would no longer be the published ones).
"""
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

#: ``n_c`` from which a class is head (VOC-MLT / COCO-MLT)
HEAD_THRESHOLD = 100
#: ``n_c`` below which a class is tail (VOC-MLT / COCO-MLT)
TAIL_THRESHOLD = 20


def _image_classes(ids: Iterable[int]) -> List[int]:
    """The distinct class ids of one image (in ``set`` order: the order in
    which the sampler has always summed the rarities)."""
    return list(set(int(c) for c in ids))


def count_classes(label_sets: Sequence[Sequence[int]],
                  num_classes: int) -> List[int]:
    """``n_c``: how many of the images contain class ``c`` (length C).

    Args:
        label_sets: the class ids of each image (one sequence per image;
            an id repeated on one image counts once, an image without id
            counts for no class).
        num_classes: ``C``; every id must lie in ``0 .. C-1``.

    Raises:
        ValueError: an id outside ``0 .. C-1``.
    """
    counts = [0] * num_classes
    for i, ids in enumerate(label_sets):
        for c in _image_classes(ids):
            if not 0 <= c < num_classes:
                raise ValueError(
                    f'image {i} has class id {c} outside 0..'
                    f'{num_classes - 1} ({num_classes} classes)')
            counts[c] += 1
    return counts


def class_groups(class_counts: Sequence[int],
                 head_threshold: int = HEAD_THRESHOLD,
                 tail_threshold: int = TAIL_THRESHOLD
                 ) -> Tuple[List[int], List[int], List[int]]:
    """Split classes by image count ``n_c``.

    head: ``n_c >= head_threshold``; middle: ``tail_threshold <= n_c <
    head_threshold``; tail: ``n_c < tail_threshold``. Sorted class indices.
    For the benchmark groups, pass the counts of the full train list.
    """
    if not 0 < tail_threshold <= head_threshold:
        raise ValueError('need 0 < tail_threshold <= head_threshold, got '
                         f'tail_threshold={tail_threshold}, '
                         f'head_threshold={head_threshold}')
    head, middle, tail = [], [], []
    for class_id, n in enumerate(class_counts):
        if n >= head_threshold:
            head.append(class_id)
        elif n >= tail_threshold:
            middle.append(class_id)
        else:
            tail.append(class_id)
    return head, middle, tail


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


class RepeatRates(NamedTuple):
    """The repeat rates of a set of images (:func:`repeat_rates`)."""
    #: the classes that occur in at least one image, sorted
    classes: List[int]
    #: ``n_c`` of those classes, in the order of ``classes``
    class_counts: List[int]
    #: ``N``, the number of images (those without class included)
    num_images: int
    #: the normalised sampler weight of each image (float64, length N)
    weights: np.ndarray


def repeat_rates(label_sets: Sequence[Sequence[int]],
                 power: float) -> RepeatRates:
    """Per-image repeat rates counted over ``label_sets`` themselves.

    ``N = len(label_sets)`` and ``n_c`` are counted over these images (the
    images the sampler draws from); classes that occur in none of them play
    no part (their rarity is undefined, and no image would use it). An id
    repeated on one image counts once.

    Raises:
        ValueError: a negative id, a bad power, or no image with a class.
    """
    label_sets = [_image_classes(ids) for ids in label_sets]
    present = sorted({c for ids in label_sets for c in ids})
    if not present:
        raise ValueError('no image of the dataset has a class (the sample '
                         'weights would all be zero)')
    if present[0] < 0:
        raise ValueError(f'negative class id {present[0]}')
    index = {c: i for i, c in enumerate(present)}
    local = [[index[c] for c in ids] for ids in label_sets]
    counts = count_classes(local, len(present))
    weights = sample_weights(local, counts, len(local), power)
    return RepeatRates(present, counts, len(local), weights)


class LongTailStats(NamedTuple):
    """The class statistics of a long-tailed train list and protocol."""
    #: ``n_c`` over the images trained on
    class_counts: List[int]
    #: ``N``, the number of images trained on
    num_train_images: int
    #: the benchmark groups, from the counts of the full train list
    head_classes: List[int]
    middle_classes: List[int]
    tail_classes: List[int]
    #: ``n_c`` over the full train list (the groups' counts)
    train_list_counts: List[int]
    #: the number of images of the full train list
    num_train_list_images: int

    def metainfo(self) -> dict:
        """The ``metainfo`` keys of a dataset (without ``classes``)."""
        return dict(
            class_counts=list(self.class_counts),
            num_train_images=self.num_train_images,
            head_classes=list(self.head_classes),
            middle_classes=list(self.middle_classes),
            tail_classes=list(self.tail_classes))


def long_tail_stats(train_labels: Sequence[Sequence[int]],
                    num_classes: int,
                    held_out: Optional[Iterable[int]] = None,
                    head_threshold: int = HEAD_THRESHOLD,
                    tail_threshold: int = TAIL_THRESHOLD) -> LongTailStats:
    """The statistics of a train list under a protocol.

    Args:
        train_labels: the class ids of each image of the full train list.
        num_classes: ``C``.
        held_out: positions in ``train_labels`` of the images held out for
            validation (the honest protocol, ``holdout_val=True``); None or
            empty for the paper's protocol (all images are trained on).
        head_threshold, tail_threshold: the group thresholds
            (:func:`class_groups`).

    Returns:
        :class:`LongTailStats`: ``class_counts`` / ``num_train_images``
        over the images trained on (the train list without ``held_out``),
        for the loss class weights and the same counts the sampler gets
        from those images; the head / middle / tail groups from the counts
        of the full train list (the benchmark's definition, in both
        protocols). Without ``held_out`` both are the full list's, as in
        the paper.
    """
    full = count_classes(train_labels, num_classes)
    head, middle, tail = class_groups(full, head_threshold, tail_threshold)
    out = set(int(i) for i in held_out) if held_out is not None else set()
    if out and not (min(out) >= 0 and max(out) < len(train_labels)):
        raise ValueError(f'held-out positions must lie in 0..'
                         f'{len(train_labels) - 1}')
    if out:
        trained = [ids for i, ids in enumerate(train_labels) if i not in out]
        counts = count_classes(trained, num_classes)
    else:
        trained, counts = train_labels, list(full)
    return LongTailStats(
        class_counts=counts,
        num_train_images=len(trained),
        head_classes=head,
        middle_classes=middle,
        tail_classes=tail,
        train_list_counts=full,
        num_train_list_images=len(train_labels))
