# Copyright (c) lmclip_mm authors.
"""Per-class decision thresholds that maximise each class's F1."""
from typing import Tuple

import numpy as np
import torch

__all__ = ['fit_class_thresholds']


def _best_f1_threshold(score: np.ndarray,
                       positive: np.ndarray) -> Tuple[float, float]:
    """(threshold, F1) of one class: predict ``score >= threshold``.

    Every distinct score is a candidate cut (a tie block is one cut); the
    best F1 wins, ties broken by the higher threshold. The threshold is the
    midpoint between the lowest kept score and the next lower score (so
    that unseen scores between the two are decided half way).
    """
    order = np.argsort(-score, kind='stable')
    s = score[order]
    tp = np.cumsum(positive[order])
    n_pos = tp[-1]
    # last index of every tie block
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    n_pred = last + 1
    f1 = 2 * tp[last] / (n_pos + n_pred)
    best = int(np.argmax(f1))  # first max: the highest threshold
    cut = last[best]
    lower = s[cut + 1] if cut + 1 < s.size else 0.0
    return float((s[cut] + lower) / 2), float(f1[best])


def fit_class_thresholds(probs, target, default: float,
                         min_positives: int = 1
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fit a threshold per class that maximises that class's F1.

    Args:
        probs: ``(N, C)`` decision scores (the model's
            :meth:`~lmclip_mm.models.LMCLIPClassifier.decision_scores`).
        target: ``(N, C)`` multi-hot targets (1 positive; 0 negative; -1
            ignored).
        default (float): the threshold of a class with fewer than
            ``min_positives`` positives (no basis for a fit).
        min_positives (int): see ``default``. Defaults to 1.

    Returns:
        tuple: ``thresholds`` ``(C,)`` float32 and the fitted per-class F1
        ``(C,)`` (nan where ``default`` was used).
    """
    probs = torch.as_tensor(probs).detach().cpu().double().numpy()
    target = torch.as_tensor(target).detach().cpu().numpy()
    if probs.ndim != 2 or probs.shape != target.shape:
        raise ValueError('probs and target must be (N, C) of one shape, got '
                         f'{probs.shape} and {target.shape}')
    num_classes = probs.shape[1]
    thresholds = np.full(num_classes, float(default))
    f1 = np.full(num_classes, np.nan)
    for c in range(num_classes):
        valid = target[:, c] > -1
        positive = target[valid, c] == 1
        if positive.sum() < max(1, min_positives):
            continue
        thresholds[c], f1[c] = _best_f1_threshold(probs[valid, c], positive)
    return (torch.as_tensor(thresholds, dtype=torch.float32),
            torch.as_tensor(f1, dtype=torch.float64))
