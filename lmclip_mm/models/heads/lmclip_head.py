"""The head of LM-CLIP: its losses and its decision rule on the logits."""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample, label_to_onehot

__all__ = ['LMCLIPHead', 'DEFAULT_THR', 'SCORE_ACTIVATIONS']

SCORE_ACTIVATIONS = ('none', 'softmax', 'sigmoid')

#: ``thr`` of the default decision rule, on the softmax over the classes
#: (see :class:`LMCLIPHead`, "Predicted labels").
DEFAULT_THR = 0.1


def _build(loss):
    return loss if isinstance(loss, nn.Module) else MODELS.build(loss)


@MODELS.register_module()
class LMCLIPHead(BaseModule):
    """Losses and decision rule of
    :class:`~lmclip_mm.models.LMCLIPClassifier`, on its ``(N, C)`` logits.

    The counterpart of mmpretrain's ``MultiLabelClsHead``: it builds
    ``loss_module`` from ``loss``, keeps ``thr``/``topk`` (with the same
    precedence), :meth:`loss` gives the loss dict and :meth:`predict` sets
    ``pred_score`` and ``pred_label``. Unlike that head it takes the logits
    themselves (LM-CLIP's classes are text embeddings, computed by the
    classifier, not a linear layer), also holds the image-caption
    ``contrastive_loss``, and decides on the softmax over the classes.

    The classifier builds its head from its own arguments (``loss``,
    ``contrastive_loss``, ``score_activation``, ``thr``, ``topk``), so
    configs set them on the model, as before.

    **Predicted labels.** :meth:`predict` sets, as mmpretrain's
    ``MultiLabelClsHead``, ``pred_score`` (the ``(C,)`` scores the AP
    metrics rank, per ``score_activation``; raw ``s * cos`` logits by
    default) and ``pred_label`` (the indices of the predicted classes). The
    logits are CLIP's scaled cosines (``s`` ~ 10-100): a sigmoid of them
    saturates at 1.0 for most classes, so the decision is taken on the
    softmax over the classes (CLIP's zero-shot activation and the paper's
    evaluation protocol), where a class holding at least ``thr`` of the
    probability mass is predicted. An image with k confident classes gives
    each about 1/k, so the default ``thr=0.1`` keeps up to ~10 co-occurring
    classes while ignoring the long flat tail of unrelated classes (VOC 20 /
    COCO 80 classes, 1.4 / 2.9 labels per image). ``thr``/``topk`` as
    mmpretrain's head; per-class thresholds fitted on held-out data (buffer
    ``class_thresholds``, saved in checkpoints) take precedence.

    Args:
        loss (dict | nn.Module): the multi-label classification loss on the
            (N, C) logits. Defaults to ``dict(type='BalancedAsymmetricLoss')``.
        contrastive_loss (dict | nn.Module, optional): the image-caption
            loss; None disables it. Defaults to
            ``dict(type='CLIPContrastiveLoss')``.
        score_activation (str): ``pred_score`` of predictions: ``'none'``
            (raw logits, default), ``'softmax'`` over the classes (the
            paper's evaluation protocol) or ``'sigmoid'``.
        thr (float, optional): ``pred_label`` = the classes whose softmax
            probability (over the classes) is ``>= thr``.
        topk (int, optional): ``pred_label`` = the ``topk`` classes of
            highest score. As mmpretrain's ``MultiLabelClsHead``: if both
            are given ``thr`` wins; if neither, ``thr=DEFAULT_THR`` (0.1).
            Per-class thresholds (:meth:`set_class_thresholds`, fitted by
            ``tools/analysis/fit_thresholds.py``) replace both.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 loss: dict = dict(type='BalancedAsymmetricLoss'),
                 contrastive_loss: Optional[dict] = dict(
                     type='CLIPContrastiveLoss'),
                 score_activation: str = 'none',
                 thr: Optional[float] = None,
                 topk: Optional[int] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if score_activation not in SCORE_ACTIVATIONS:
            raise ValueError(f'score_activation must be one of '
                             f'{SCORE_ACTIVATIONS}, got {score_activation!r}')
        if thr is None and topk is None:
            thr = DEFAULT_THR
        if thr is not None and not 0 <= thr <= 1:
            raise ValueError(f'thr must be in [0, 1], got {thr}')
        if topk is not None and (not isinstance(topk, int) or topk < 1):
            raise ValueError(f'topk must be a positive int, got {topk!r}')
        self.score_activation = score_activation
        self.thr = thr
        self.topk = topk
        self.register_buffer('class_thresholds', None)
        self.loss_module = _build(loss)
        self.contrastive_loss = (_build(contrastive_loss)
                                 if contrastive_loss is not None else None)

    # ------------------------------------------------------------------
    # loss

    @staticmethod
    def get_targets(data_samples: Sequence[DataSample],
                    logits: torch.Tensor) -> torch.Tensor:
        """The ``(N, C)`` float32 multi-hot targets of the data samples
        (``gt_score``, else ``gt_label``), on the device of ``logits``,
        checked against the shape of ``logits``."""
        num_classes = logits.size(1)
        if data_samples is None or len(data_samples) == 0:
            raise ValueError('mode="loss" needs data samples with labels')
        if 'gt_score' in data_samples[0]:
            target = torch.stack([ds.gt_score for ds in data_samples])
            if target.shape[1] != num_classes:
                raise ValueError(f'gt_score has {target.shape[1]} classes, '
                                 f'the model {num_classes}')
        else:
            labels = [ds.gt_label for ds in data_samples]
            for label in labels:
                if label.numel() and (int(label.max()) >= num_classes
                                      or int(label.min()) < 0):
                    raise ValueError(f'gt_label {label.tolist()} outside '
                                     f'0..{num_classes - 1}')
            target = torch.stack(
                [label_to_onehot(label, num_classes) for label in labels])
        if target.size(0) != logits.size(0):
            raise ValueError(f'{target.size(0)} data samples for '
                             f'{logits.size(0)} images')
        return target.to(logits.device, torch.float32)

    def loss(self,
             logits: torch.Tensor,
             target: torch.Tensor,
             image_features: Optional[torch.Tensor] = None,
             caption_features: Optional[torch.Tensor] = None,
             logit_scale: Optional[torch.Tensor] = None,
             captions: Optional[List[str]] = None) -> Dict[str, torch.Tensor]:
        """The losses: ``loss_bal`` (``loss_module`` on the logits and the
        targets of :meth:`get_targets`) and, with a ``contrastive_loss``,
        ``loss_contrastive`` on the image and caption features (not
        normalised), CLIP's logit scale and the captions."""
        losses = dict(loss_bal=self.loss_module(logits, target))
        if self.contrastive_loss is not None:
            losses['loss_contrastive'] = self.contrastive_loss(
                image_features, caption_features, logit_scale, captions)
        return losses

    # ------------------------------------------------------------------
    # decision rule

    def set_class_thresholds(self,
                             thresholds,
                             num_classes: Optional[int] = None,
                             device: Optional[torch.device] = None) -> None:
        """Per-class thresholds on the softmax probabilities (``(C,)``, in
        [0, 1]; None removes them), checked against ``num_classes`` when
        given and put on ``device``. Saved with the state dict."""
        if thresholds is None:
            self.class_thresholds = None
            return
        thresholds = torch.as_tensor(
            thresholds, dtype=torch.float32).detach().clone().flatten()
        if num_classes is not None and thresholds.numel() != num_classes:
            raise ValueError(f'{thresholds.numel()} thresholds for '
                             f'{num_classes} classes')
        if not torch.isfinite(thresholds).all() or (thresholds < 0).any() \
                or (thresholds > 1).any():
            raise ValueError('class thresholds must be in [0, 1]')
        self.class_thresholds = thresholds.to(device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint may carry class thresholds this head does not have
        # yet: adopt them before the regular loading.
        key = prefix + 'class_thresholds'
        if key in state_dict:
            self.class_thresholds = state_dict[key].detach().clone().to(
                torch.float32)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def decision_scores(logits: torch.Tensor) -> torch.Tensor:
        """The scores ``thr`` and the class thresholds apply to: the
        softmax over the classes, float32."""
        return logits.float().softmax(dim=-1)

    def predict_labels(self, logits: torch.Tensor) -> List[torch.Tensor]:
        """``pred_label`` (class indices) of each row of ``logits``."""
        probs = self.decision_scores(logits)
        if self.class_thresholds is not None:
            if self.class_thresholds.numel() != probs.size(1):
                raise ValueError(
                    f'{self.class_thresholds.numel()} class thresholds for '
                    f'{probs.size(1)} classes')
            keep = probs >= self.class_thresholds.to(probs.device)
        elif self.thr is not None:
            keep = probs >= self.thr
        else:
            k = min(self.topk, probs.size(1))
            return list(probs.topk(k, dim=1).indices)
        return [torch.nonzero(row).flatten() for row in keep]

    def pred_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """``pred_score`` of each row of ``logits``, per
        ``score_activation``."""
        if self.score_activation == 'softmax':
            return logits.softmax(dim=-1)
        if self.score_activation == 'sigmoid':
            return logits.sigmoid()
        return logits

    def predict(self,
                logits: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None
                ) -> List[DataSample]:
        """``pred_score`` (C,) and ``pred_label`` of each row of ``logits``,
        set on ``data_samples`` (new ones if None)."""
        logits = logits.float()
        scores = self.pred_scores(logits)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(scores.size(0))]
        elif len(data_samples) != scores.size(0):
            raise ValueError(f'{len(data_samples)} data samples for '
                             f'{scores.size(0)} images')
        labels = self.predict_labels(logits)
        for data_sample, score, label in zip(data_samples, scores, labels):
            data_sample.set_pred_score(score).set_pred_label(label)
        return data_samples
