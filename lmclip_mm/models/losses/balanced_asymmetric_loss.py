"""Balanced Asymmetric Loss (LM-CLIP, Timmermann et al., IEEE Access 2025)."""
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.dist import get_world_size
from mmpretrain.registry import MODELS

from ..utils.distributed import all_gather_with_grad, global_batch_size

__all__ = ['BalancedAsymmetricLoss', 'balanced_asymmetric_loss']


def balanced_asymmetric_loss(cls_score: torch.Tensor,
                             label: torch.Tensor,
                             gamma_pos: float = 0.0,
                             gamma_neg: float = 4.0,
                             clip: Optional[float] = 0.05,
                             eps: float = 1e-8,
                             label_smoothing: float = 0.0,
                             class_weight: Optional[torch.Tensor] = None,
                             batch_max: Optional[torch.Tensor] = None
                             ) -> torch.Tensor:
    """Per-entry ``L`` of the Balanced Asymmetric Loss, shape ``(N, C)``.

    The loss is ``-mean(L)``.

    See :class:`BalancedAsymmetricLoss` for the definition. ``cls_score``
    and ``label`` must be float tensors of the same shape (the caller
    casts); the result is in their dtype.

    ``batch_max``: ``(max(x), -min(x))`` of the whole batch as a 2-vector
    (with gradient), when the batch is larger than ``cls_score`` (e.g. the
    global batch of all ranks); default: computed from ``cls_score``.
    """
    x, y = cls_score, label
    num_classes = x.size(-1)

    # 2. z = x / max(x) over the whole batch (the gradient flows through the
    # max). When max(x) <= 0, divide by max|x| (no sign flip) or by 1 for an
    # all-zero batch. torch.where keeps this free of host syncs.
    if batch_max is None:
        x_max, neg_max = x.max(), -x.min()
    else:
        x_max, neg_max = batch_max[0], batch_max[1]
    abs_max = torch.maximum(x_max, neg_max)  # max|x| without an |x| copy
    denom = torch.where(x_max > 0, x_max,
                        torch.where(abs_max > 0, abs_max,
                                    torch.ones_like(abs_max)))
    p = torch.sigmoid(x / denom)

    # 3. q = min(1 - p + m, 1).
    q = 1 - p
    if clip is not None and clip > 0:
        q = (q + clip).clamp_(max=1)

    # 1. smoothed targets t and anti-targets a = 1 - y (unsmoothed).
    a = 1 - y
    if label_smoothing > 0:
        t = y * (1 - label_smoothing) + label_smoothing / num_classes
    else:
        t = y

    # 4. L = t log(max(p, eps)) (1 + w_c) + a log(max(q, eps)).
    pos = t * p.clamp(min=eps).log()
    if class_weight is not None:
        pos = pos * (1 + class_weight)
    loss = pos + a * q.clamp(min=eps).log()

    # 5. asymmetric focusing, gradient flowing through the factor.
    if gamma_pos > 0 or gamma_neg > 0:
        # The base can be < 0 with label smoothing and clipping
        # (-p eps_ls / C for a confident negative): clamped at 0, where
        # clamp's backward gives a zero (never NaN) gradient, also at 0.
        base = (1 - p * t - q * a).clamp(min=0)
        factor = base.pow(gamma_pos * t + gamma_neg * a)
        loss = loss * factor
    return loss


@MODELS.register_module()
class BalancedAsymmetricLoss(nn.Module):
    """Balanced Asymmetric Loss for multi-label classification.

    With ``y`` the (N, C) multi-hot labels, ``x`` the logits,
    ``eps_ls = label_smoothing``, ``m = clip`` and ``w_c`` the class weights:

    1. ``t = (1 - eps_ls) y + eps_ls / C``; ``a = 1 - y``;
    2. ``z = x / max(x)`` (max over the whole batch, gradient through it;
       ``max|x|`` when ``max(x) <= 0``; 1 for an all-zero batch);
    3. ``p = sigmoid(z)``; ``q = min(1 - p + m, 1)`` (``1 - p`` if ``m`` is
       0 or None);
    4. ``L = t log(max(p, eps)) (1 + w_c) + a log(max(q, eps))``;
    5. if a gamma is positive:
       ``L *= max(1 - p t - q a, 0) ** (gamma_pos t + gamma_neg a)``
       (gradient through the factor);
    6. ``loss = loss_weight * -mean(L)`` over all ``N * C`` entries (the
       paper's reduction, used by ``LMCLIPClassifier``).

    **In an mmpretrain head** the loss follows mmpretrain's loss protocol,
    exactly as mmpretrain's :class:`~mmpretrain.models.losses.AsymmetricLoss`:
    ``weight`` (a sample-wise ``(N,)`` weight) multiplies the element-wise
    loss ``loss_weight * -L``; ``avg_factor`` turns the ``'mean'``
    reduction into ``sum / avg_factor`` (``MultiLabelClsHead`` passes
    ``avg_factor=N``, so inside a head the loss is the sum over the classes
    averaged over the images, on the scale of mmpretrain's other
    multi-label losses); ``reduction_override`` (or ``reduction``) may be
    ``'none'`` (the ``(N, C)`` element-wise loss), ``'mean'`` or ``'sum'``
    (``avg_factor`` with ``'sum'`` is an error, as in mmpretrain).

    The loss is computed in float32, also under fp16/bf16 autocast.

    **Distributed training.** With ``global_batch=True`` (default) and
    several processes, "the batch" of steps 2 and 6 is the global batch of
    all ranks: ``max(x)`` is taken over every rank's logits (gathered with
    gradient) and each rank's sum is divided by the global ``N * C`` (times
    W, which DDP's gradient averaging divides out). W processes with batch
    b then compute the loss and the gradients of one process with batch
    W * b (to float rounding), as the contrastive loss does; the value each
    rank logs is its own share (the global loss when the ranks hold
    equally many samples). ``global_batch=False`` normalises by each
    rank's own batch instead (W independent batches of b).

    Args:
        gamma_pos (float): focusing power of the positives. Defaults to 0.
        gamma_neg (float): focusing power of the negatives. Defaults to 4.
        clip (float, optional): probability margin ``m`` of the negatives.
            Defaults to 0.05.
        eps (float): lower clamp of the probabilities inside the logs.
        label_smoothing (float): ``eps_ls`` in ``[0, 1]``. Defaults to 0.
        class_weight (sequence of float, optional): ``w_c`` (length C); the
            positives of class c are weighted by ``1 + w_c``. Can be set
            later with :meth:`set_class_weight`. It is a buffer stored in
            checkpoints.
        loss_weight (float): the loss multiplier (LM-CLIP's lambda).
        global_batch (bool): under torch.distributed, max and mean over the
            global batch (see above; with ``avg_factor``, the sum is divided
            by the sum of every rank's ``avg_factor``). Defaults to True.
        reduction (str): ``'mean'`` (default), ``'sum'`` or ``'none'``.
    """

    def __init__(self,
                 gamma_pos: float = 0.0,
                 gamma_neg: float = 4.0,
                 clip: Optional[float] = 0.05,
                 eps: float = 1e-8,
                 label_smoothing: float = 0.0,
                 class_weight: Optional[Sequence[float]] = None,
                 loss_weight: float = 1.0,
                 global_batch: bool = True,
                 reduction: str = 'mean'):
        super().__init__()
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError("reduction must be 'none', 'mean' or 'sum', "
                             f'got {reduction!r}')
        self.reduction = reduction
        if gamma_pos < 0 or gamma_neg < 0:
            raise ValueError('gamma_pos and gamma_neg must be >= 0, got '
                             f'{gamma_pos} and {gamma_neg}')
        if clip is not None and not 0 <= clip < 1:
            raise ValueError(f'clip must be None or in [0, 1), got {clip}')
        if eps <= 0:
            raise ValueError(f'eps must be positive, got {eps}')
        if not 0 <= label_smoothing <= 1:
            raise ValueError('label_smoothing must be in [0, 1], got '
                             f'{label_smoothing}')
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)
        self.clip = clip
        self.eps = float(eps)
        self.label_smoothing = float(label_smoothing)
        self.loss_weight = float(loss_weight)
        self.global_batch = bool(global_batch)
        self.register_buffer('class_weight', None)
        if class_weight is not None:
            self.set_class_weight(class_weight)

    def set_class_weight(
        self, class_weight: Union[None, Sequence[float], np.ndarray,
                                  torch.Tensor]
    ) -> None:
        """Set (or, with None, remove) the class weights ``w_c``."""
        if class_weight is None:
            self.class_weight = None
            return
        device = (self.class_weight.device
                  if self.class_weight is not None else None)
        weight = torch.as_tensor(
            np.asarray(class_weight, dtype=np.float32)
            if not isinstance(class_weight, torch.Tensor) else class_weight,
            dtype=torch.float32,
            device=device).detach().clone()
        if weight.ndim != 1 or weight.numel() == 0:
            raise ValueError('class_weight must be a non-empty 1-D sequence, '
                             f'got shape {tuple(weight.shape)}')
        if not torch.isfinite(weight).all():
            raise ValueError('class_weight must be finite')
        self.class_weight = weight

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint may carry class weights this module does not have yet
        # (or of another length): adopt them before the regular loading.
        key = prefix + 'class_weight'
        if key in state_dict:
            self.set_class_weight(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self,
                cls_score: torch.Tensor,
                label: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> torch.Tensor:
        """Compute the loss.

        Args:
            cls_score (Tensor): logits, shape (N, C).
            label (Tensor): multi-hot labels in {0, 1}, shape (N, C).
            weight (Tensor, optional): sample-wise weights, shape (N,), as
                mmpretrain's ``AsymmetricLoss``.
            avg_factor (float, optional): with the ``'mean'`` reduction, the
                loss is ``sum / avg_factor`` (mmpretrain heads pass N).
                Defaults to None: the mean over the N * C entries.
            reduction_override (str, optional): ``'none'``, ``'mean'`` or
                ``'sum'``; overrides ``reduction``.
        """
        if reduction_override not in (None, 'none', 'mean', 'sum'):
            raise ValueError("reduction_override must be None, 'none', "
                             f"'mean' or 'sum', got {reduction_override!r}")
        reduction = reduction_override or self.reduction
        if avg_factor is not None and reduction == 'sum':
            raise ValueError('avg_factor can not be used with reduction="sum"')
        if kwargs:
            raise TypeError('unexpected arguments for BalancedAsymmetricLoss: '
                            f'{sorted(kwargs)}')
        if not isinstance(cls_score, torch.Tensor) or cls_score.ndim != 2:
            raise ValueError('cls_score must be an (N, C) tensor, got '
                             f'{getattr(cls_score, "shape", type(cls_score))}')
        if not cls_score.is_floating_point():
            raise TypeError(
                f'cls_score must be floating point, got {cls_score.dtype}')
        if not isinstance(label, torch.Tensor) or label.shape != \
                cls_score.shape:
            raise ValueError(
                'label must be an (N, C) multi-hot tensor with the shape of '
                f'cls_score {tuple(cls_score.shape)}, got '
                f'{getattr(label, "shape", type(label))}')
        if label.dtype.is_complex:
            raise TypeError(f'label must be real, got {label.dtype}')
        if cls_score.numel() == 0:
            raise ValueError('cls_score is empty')
        class_weight = self.class_weight
        if class_weight is not None and \
                class_weight.numel() != cls_score.size(1):
            raise ValueError(
                f'class_weight has {class_weight.numel()} entries but '
                f'cls_score has {cls_score.size(1)} classes')

        if class_weight is not None and \
                class_weight.device != cls_score.device:
            class_weight = class_weight.to(cls_score.device)

        with torch.autocast(device_type=cls_score.device.type, enabled=False):
            x = cls_score.float()
            batch_max, share = None, None
            world_size = get_world_size()
            if self.global_batch and world_size > 1:
                batch_max = all_gather_with_grad(
                    torch.stack([x.max(), -x.min()])).max(dim=0).values
                total = global_batch_size(x.size(0), x.device)
                # sum / (global N * C), times W for DDP's averaging
                share = world_size * x.size(0) / total
            loss = balanced_asymmetric_loss(
                x,
                label.float(),
                gamma_pos=self.gamma_pos,
                gamma_neg=self.gamma_neg,
                clip=self.clip,
                eps=self.eps,
                label_smoothing=self.label_smoothing,
                class_weight=class_weight,
                batch_max=batch_max)
            if weight is not None:
                weight = torch.as_tensor(weight, device=x.device)
                if weight.dim() != 1 or weight.numel() != x.size(0):
                    raise ValueError(
                        'weight must be a sample-wise (N,) tensor with '
                        f'N={x.size(0)}, got shape {tuple(weight.shape)}')
                loss = loss * weight.float().reshape(-1, 1)
            if reduction == 'none':
                return loss * -self.loss_weight
            if reduction == 'sum':
                return loss.sum() * -self.loss_weight
            if avg_factor is None:
                loss = loss.mean() * -self.loss_weight
            else:
                if share is not None:
                    # sum / (sum of every rank's avg_factor), times W
                    share = world_size * avg_factor / global_batch_size(
                        float(avg_factor), x.device)
                loss = loss.sum() * -self.loss_weight / avg_factor
            return loss if share is None else loss * share

    def extra_repr(self) -> str:
        return (f'gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, '
                f'clip={self.clip}, eps={self.eps}, '
                f'label_smoothing={self.label_smoothing}, '
                f'loss_weight={self.loss_weight}, '
                f'global_batch={self.global_batch}, '
                f'reduction={self.reduction!r}')
