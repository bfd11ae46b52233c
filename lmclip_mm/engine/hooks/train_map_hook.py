# Copyright (c) lmclip_mm authors.
"""Per-epoch train-set mAP (the paper code's ``train_epoch`` report)."""
import warnings

import torch
from mmengine.dist import (all_reduce, collect_results, get_world_size,
                           is_main_process)
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...evaluation.metrics.long_tail_average_precision import (
    GROUPS, long_tail_average_precision)


@HOOKS.register_module()
class TrainMAPHook(Hook):
    """mAP (all / head / middle / tail) and AUROC of the training logits of
    each epoch, as the paper's ``train.py`` reports them.

    The model publishes each training batch's logits (detached; the model
    as it was at that step, with the training augmentation) and targets,
    and this hook collects them after each iteration; at the end of the
    epoch they are gathered from every process and scored with
    :func:`~lmclip_mm.evaluation.long_tail_average_precision`
    (``apply_softmax=True`` by default: the paper's ``sf(preds)``). The
    values are logged and sent to the visualizer's backends (``scalars.json``,
    TensorBoard) as ``train/long-tail/mAP``, ``.../mAP_head``, ... at the
    epoch's last iteration. Costs one ``(N_train, C)`` float tensor per
    epoch. Groups come from the train dataset's metainfo
    (``head_classes``...).

    Use it with ``custom_hooks = [..., dict(type='TrainMAPHook')]`` on an
    :class:`~lmclip_mm.models.LMCLIPClassifier`, or on any model with the
    same two documented attributes: ``keep_train_logits`` (a flag this hook
    turns on for the epoch) and ``last_train_logits`` (``None``, or the
    ``(logits, targets)`` of the last loss computation while the flag is
    on, which this hook takes and resets to ``None``).
    """

    priority = 'LOW'

    def __init__(self, apply_softmax: bool = True,
                 prefix: str = 'train/long-tail') -> None:
        self.apply_softmax = apply_softmax
        self.prefix = prefix
        self._scores, self._targets = [], []

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train_epoch(self, runner) -> None:
        model = self._model(runner)
        if not (hasattr(model, 'keep_train_logits')
                and hasattr(model, 'last_train_logits')):
            raise TypeError(f'TrainMAPHook: {type(model).__name__} does not '
                            'keep its training logits (keep_train_logits, '
                            'last_train_logits: LMCLIPClassifier does)')
        model.keep_train_logits = True
        model.last_train_logits = None
        self._scores, self._targets = [], []

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        model = self._model(runner)
        kept = model.last_train_logits
        model.last_train_logits = None
        if kept is not None:
            self._scores.append(kept[0])
            self._targets.append(kept[1])

    def after_train_epoch(self, runner) -> None:
        self._model(runner).keep_train_logits = False
        if not self._scores:
            return
        rows = list(zip(torch.cat(self._scores), torch.cat(self._targets)))
        self._scores, self._targets = [], []
        if get_world_size() > 1:
            total = torch.tensor([len(rows)])
            all_reduce(total)
            rows = collect_results(rows, int(total), device='cpu')
        if not is_main_process():
            return
        scores = torch.stack([r[0] for r in rows])
        targets = torch.stack([r[1] for r in rows])
        meta = runner.train_dataloader.dataset.metainfo or {}
        groups = {g: meta.get(f'{g}_classes') for g in GROUPS}
        names = meta.get('classes')
        groups = {g: ([list(names).index(c) if isinstance(c, str) else int(c)
                       for c in v] if v is not None else None)
                  for g, v in groups.items()}
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            metrics = long_tail_average_precision(
                scores, targets, head_classes=groups['head'],
                middle_classes=groups['middle'],
                tail_classes=groups['tail'],
                apply_softmax=self.apply_softmax)
        metrics = {f'{self.prefix}/{k}': float(v)
                   for k, v in metrics.items()}
        print_log(f'Epoch(train) [{runner.epoch + 1}] ' + '  '.join(
            f'{k}: {v:.4f}' for k, v in metrics.items()), logger='current')
        self.last_metrics = metrics
        runner.visualizer.add_scalars(metrics, step=runner.iter)
