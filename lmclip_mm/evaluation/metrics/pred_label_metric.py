# Copyright (c) lmclip_mm authors.
"""mmpretrain's MultiLabelMetric on the model's ``pred_label``."""
from typing import Optional, Sequence

from mmpretrain.evaluation.metrics import MultiLabelMetric
from mmpretrain.registry import METRICS
from mmpretrain.structures import label_to_onehot


@METRICS.register_module()
class PredLabelMultiLabelMetric(MultiLabelMetric):
    """Precision / recall / F1 of the labels the model predicted.

    mmpretrain's :class:`MultiLabelMetric` thresholds ``pred_score`` itself
    (``thr=0.5``), which is meaningless for LM-CLIP's raw ``s * cos``
    scores. This subclass scores the model's own decision, ``pred_label``
    (``LMCLIPClassifier``'s ``thr`` / ``topk`` / fitted per-class
    thresholds; mmpretrain's ``MultiLabelClsHead`` sets it too): the
    predicted classes become a 0/1 score and mmpretrain's computation runs
    with ``thr=0.5``. Keys: ``pred-label/precision``, ``/recall``,
    ``/f1-score`` (same ``average`` / ``items`` arguments as
    ``MultiLabelMetric``).
    """
    default_prefix: Optional[str] = 'pred-label'

    def __init__(self, average: Optional[str] = 'macro', items=None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        kwargs = dict(average=average, collect_device=collect_device,
                      prefix=prefix, thr=0.5)
        if items is not None:
            kwargs['items'] = items
        super().__init__(**kwargs)

    def process(self, data_batch, data_samples: Sequence[dict]):
        for data_sample in data_samples:
            if 'pred_label' not in data_sample:
                raise KeyError(
                    'PredLabelMultiLabelMetric needs pred_label in the '
                    'predictions (LMCLIPClassifier, MultiLabelClsHead)')
            num_classes = data_sample['pred_score'].size()[-1]
            result = dict(pred_score=label_to_onehot(
                data_sample['pred_label'], num_classes).float())
            if 'gt_score' in data_sample:
                result['gt_score'] = data_sample['gt_score'].clone()
            else:
                result['gt_score'] = label_to_onehot(data_sample['gt_label'],
                                                     num_classes)
            self.results.append(result)
