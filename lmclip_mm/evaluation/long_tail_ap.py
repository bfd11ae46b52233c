# Copyright (c) lmclip_mm authors.
"""Long-tailed multi-label evaluation, the computation: mAP over all / head /
middle / tail classes and macro ROC-AUC (the metric:
:class:`~lmclip_mm.evaluation.LongTailAveragePrecision`).

The per-class average precision is mmpretrain's own
(:meth:`mmpretrain.evaluation.AveragePrecision.calculate`, i.e.
``mmpretrain.evaluation.metrics.multi_label._average_precision``); this module
only adds the class selection, the group means and the AUROC.

Conventions (same as mmpretrain's ``_average_precision``):

* a target entry ``== 1`` is a positive, ``> -1`` and ``!= 1`` a negative,
  ``-1`` (e.g. "difficult") is ignored for that class;
* results are in percent.

Classes without a positive
--------------------------
mmpretrain's ``_average_precision`` returns **0** for a class with no positive
sample (``0 / max(0, eps)``) and so does scikit-learn's
``average_precision_score`` (used by the paper's code, whose mAP is the
``nanmean`` of those per-class APs). By default (``no_positive='zero'``) such
a class therefore counts with AP 0 in ``mAP`` and in its group mean, so that
the same scores give the same mAP as mmpretrain's ``AveragePrecision`` and the
paper's code; an :class:`UndefinedMetricWarning` naming the classes is
emitted. ``no_positive='exclude'`` leaves them out of the means instead (their
``AP_classwise`` entry is ``nan``; a mean none of whose classes is left is
``nan``, with a warning). A class whose targets are all ``-1`` (mmpretrain
raises ``IndexError``) is treated as a class without positive. For AUROC a
class needs a positive and a negative: classes without both are always
excluded from ``AUROC`` (same warning).

Image subsets
-------------
As the paper's ``test.py``, ``mAP_single_label`` and ``mAP_multi_label`` are
the mAP over the images with exactly one positive class and with more than one
(same rule for classes without positive in the subset, no warning; ``nan``
when the subset is empty).

Tied scores
-----------
mmpretrain's AP sorts the scores with ``torch.argsort`` and walks them one by
one, so within a block of tied scores the positives and negatives are taken in
``argsort`` order (unspecified) and the AP depends on that order. sklearn's
``average_precision_score`` (and the usual VOC/COCO code) treat a block of
tied scores as a single threshold. Example: targets ``[0, 1, 0, 1, 0, 0]``,
scores ``[.5, .5, .5, .5, .9, .1]``: sklearn 40.0, mmpretrain 36.67 — and
50.0 for the same data in reversed order. Without ties the two are identical.
Saturated sigmoids (``sigmoid(x) == 1.0`` for ``x > ~17`` in float32) or
half-precision scores produce ties, so be careful comparing mAPs across
implementations in that case. ``AUROC`` here is tie-exact (average ranks) and
matches ``sklearn.metrics.roc_auc_score``.
"""
import warnings
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from mmpretrain.evaluation.metrics import AveragePrecision
from mmpretrain.evaluation.metrics.single_label import to_tensor

GROUPS = ('head', 'middle', 'tail')


class UndefinedMetricWarning(UserWarning):
    """A per-class metric is undefined and left out of the means."""


def _describe(indices: Sequence[int],
              class_names: Optional[Sequence[str]] = None,
              limit: int = 30) -> str:
    items = []
    for i in list(indices)[:limit]:
        if class_names is not None and i < len(class_names):
            items.append(f'{i} ({class_names[i]})')
        else:
            items.append(str(i))
    if len(indices) > limit:
        items.append(f'... ({len(indices) - limit} more)')
    return ', '.join(items)


def roc_auc_per_class(pred: Union[torch.Tensor, np.ndarray],
                      target: Union[torch.Tensor, np.ndarray],
                      chunk_size: int = 256) -> np.ndarray:
    """ROC-AUC of every class (column), in [0, 1], via the Mann-Whitney U.

    Ties get average ranks, so the result equals
    ``sklearn.metrics.roc_auc_score`` exactly (up to float rounding). Entries
    with target ``-1`` are ignored; a class without both a positive
    (target ``== 1``) and a negative gets ``nan``.

    Args:
        pred: scores, shape ``(N, C)``.
        target: targets, shape ``(N, C)``.
        chunk_size: classes processed at once (bounds the memory).

    Returns:
        np.ndarray: shape ``(C,)``, float64.
    """
    pred = to_tensor(pred).detach().cpu().double().numpy()
    target = to_tensor(target).detach().cpu().numpy()
    assert pred.ndim == 2 and pred.shape == target.shape, \
        'Both `pred` and `target` should have shape `(N, num_classes)`.'
    num_samples, num_classes = pred.shape
    auc = np.full(num_classes, np.nan)
    if num_samples == 0:
        return auc
    idx = np.arange(num_samples)[:, None]
    for start in range(0, num_classes, chunk_size):
        p = pred[:, start:start + chunk_size].copy()
        t = target[:, start:start + chunk_size]
        valid = t > -1
        pos = (t == 1) & valid
        n_pos = pos.sum(0)
        n_neg = valid.sum(0) - n_pos
        # Ignored entries are sorted after every valid one (np.sort puts NaN
        # last), so the valid entries get ranks 1..n_valid among themselves.
        p[~valid] = np.nan
        order = np.argsort(p, axis=0, kind='stable')
        s = np.take_along_axis(p, order, axis=0)
        s_pos = np.take_along_axis(pos, order, axis=0)
        # tie blocks: first/last sorted position of the block of each entry
        differs = s[1:] != s[:-1]  # NaN != NaN: ignored entries stay apart
        first = np.concatenate([np.ones_like(differs[:1]), differs], 0)
        last = np.concatenate([differs, np.ones_like(differs[:1])], 0)
        block_start = np.maximum.accumulate(np.where(first, idx, 0), axis=0)
        block_end = np.minimum.accumulate(
            np.where(last, idx, num_samples)[::-1], axis=0)[::-1]
        ranks = (block_start + block_end) / 2.0 + 1.0
        rank_sum = (ranks * s_pos).sum(0)
        u = rank_sum - n_pos * (n_pos + 1) / 2.0
        with np.errstate(divide='ignore', invalid='ignore'):
            chunk_auc = u / (n_pos * n_neg)
        chunk_auc[(n_pos == 0) | (n_neg == 0)] = np.nan
        auc[start:start + chunk_size] = chunk_auc
    return auc


def _nanmean_or_nan(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float('nan')


NO_POSITIVE_RULES = ('zero', 'exclude')


def _class_ap(pred: torch.Tensor, target: torch.Tensor,
              no_positive: str) -> tuple:
    """Per-class AP (%, float64, ``(C,)``) by mmpretrain's code; classes
    without a positive get 0 (``'zero'``) or nan (``'exclude'``). Also
    returns the positive mask."""
    num_classes = pred.shape[1]
    valid = target > -1
    pos = (target == 1) & valid
    has_pos = pos.any(0)
    ap = np.full(num_classes,
                 0.0 if no_positive == 'zero' else np.nan)
    ap_defined = torch.nonzero(has_pos).flatten()
    if ap_defined.numel():
        ap[ap_defined.numpy()] = AveragePrecision.calculate(
            pred[:, ap_defined], target[:, ap_defined],
            average=None).double().numpy()
    return ap, pos, valid, has_pos


def long_tail_average_precision(
        pred: Union[torch.Tensor, np.ndarray],
        target: Union[torch.Tensor, np.ndarray],
        head_classes: Optional[Sequence[int]] = None,
        middle_classes: Optional[Sequence[int]] = None,
        tail_classes: Optional[Sequence[int]] = None,
        apply_softmax: bool = False,
        classwise: bool = False,
        class_names: Optional[Sequence[str]] = None,
        no_positive: str = 'zero',
        subsets: bool = False) -> Dict[str, object]:
    """mAP (all / head / middle / tail classes) and macro AUROC, in percent.

    Args:
        pred: scores, shape ``(N, C)``.
        target: targets, shape ``(N, C)``: 1 positive, 0 negative, -1
            ignored.
        head_classes, middle_classes, tail_classes: class indices of each
            group; a group that is ``None`` gets no ``mAP_<group>`` key.
        apply_softmax: softmax each sample's scores over the classes first
            (the LM-CLIP paper's protocol).
        classwise: also return ``AP_classwise`` (list of C floats).
        class_names: only used to name classes in warnings.
        no_positive: ``'zero'`` (default: AP 0 for a class without a
            positive, as mmpretrain and scikit-learn) or ``'exclude'`` (left
            out of the means, ``nan`` in ``AP_classwise``). Warned either way.
        subsets: also return ``mAP_single_label`` and ``mAP_multi_label``,
            the mAP over the images with exactly one / more than one
            positive (the paper's ``test.py``).

    Returns:
        dict: ``mAP``, ``mAP_head`` / ``mAP_middle`` / ``mAP_tail`` (for the
        given groups), ``AUROC``, optionally ``mAP_single_label`` /
        ``mAP_multi_label`` and ``AP_classwise``.
    """
    if no_positive not in NO_POSITIVE_RULES:
        raise ValueError(f'no_positive must be one of {NO_POSITIVE_RULES}, '
                         f'got {no_positive!r}')
    pred = to_tensor(pred).detach().cpu()
    target = to_tensor(target).detach().cpu()
    assert pred.ndim == 2 and pred.shape == target.shape, \
        'Both `pred` and `target` should have shape `(N, num_classes)`.'
    pred = pred.double()
    if apply_softmax:
        pred = torch.softmax(pred, dim=1)
    num_classes = pred.shape[1]

    # --- AP: mmpretrain's implementation
    ap, pos, valid, has_pos = _class_ap(pred, target, no_positive)
    has_neg = (valid & ~pos).any(0)
    no_pos = torch.nonzero(~has_pos).flatten().tolist()
    if no_pos:
        how = ('counted with AP 0 in mAP and the group mAPs (as mmpretrain '
               "and scikit-learn; no_positive='exclude' leaves them out)"
               if no_positive == 'zero' else
               'excluded from mAP and the group mAPs')
        warnings.warn(
            f'{len(no_pos)} of {num_classes} classes have no positive sample '
            f'in the evaluated set; their AP is undefined and {how}; they '
            f'are excluded from AUROC: {_describe(no_pos, class_names)}',
            UndefinedMetricWarning,
            stacklevel=2)

    results: Dict[str, object] = {}
    results['mAP'] = _nanmean_or_nan(ap)
    if not has_pos.any() and no_positive == 'exclude':
        warnings.warn('No class has a positive sample: mAP is nan.',
                      UndefinedMetricWarning, stacklevel=2)

    for name, group in zip(GROUPS, (head_classes, middle_classes,
                                    tail_classes)):
        if group is None:
            continue
        group = np.asarray(list(group), dtype=np.int64)
        if group.size and (group.min() < 0 or group.max() >= num_classes):
            raise ValueError(f'`{name}_classes` has indices out of '
                             f'[0, {num_classes}): {group.tolist()}')
        value = _nanmean_or_nan(ap[group])
        if np.isnan(value):
            warnings.warn(
                f'No class of the {name} group ({group.size} classes) has a '
                f'positive sample in the evaluated set: mAP_{name} is nan.',
                UndefinedMetricWarning,
                stacklevel=2)
        results[f'mAP_{name}'] = value

    # --- macro AUROC
    auc = roc_auc_per_class(pred, target)
    no_neg = torch.nonzero(has_pos & ~has_neg).flatten().tolist()
    if no_neg:
        warnings.warn(
            f'{len(no_neg)} of {num_classes} classes have no negative sample '
            'in the evaluated set; their AUROC is undefined and they are '
            f'excluded from AUROC: {_describe(no_neg, class_names)}',
            UndefinedMetricWarning,
            stacklevel=2)
    results['AUROC'] = _nanmean_or_nan(auc) * 100.0

    # --- the images with one / several positives (the paper's test.py)
    if subsets:
        num_pos = pos.sum(1)
        for key, rows in (('mAP_single_label', num_pos == 1),
                          ('mAP_multi_label', num_pos > 1)):
            if not rows.any():
                results[key] = float('nan')
                continue
            sub_ap = _class_ap(pred[rows], target[rows], no_positive)[0]
            results[key] = _nanmean_or_nan(sub_ap)

    if classwise:
        results['AP_classwise'] = ap.tolist()
    return results
