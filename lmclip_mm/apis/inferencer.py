# Copyright (c) lmclip_mm authors.
"""mmpretrain's image-classification inferencer with multi-label output."""
from typing import List

from mmpretrain.apis import ImageClassificationInferencer
from mmpretrain.structures import DataSample

__all__ = ['MultiLabelClsInferencer']


class MultiLabelClsInferencer(ImageClassificationInferencer):
    """:class:`~mmpretrain.apis.ImageClassificationInferencer` whose results
    also carry the model's multi-label decision.

    mmpretrain's inferencer reports the arg-max class only. Each result
    here keeps its keys (``pred_scores``, ``pred_label``, ``pred_score``,
    ``pred_class``: the top-1 class) and adds ``pred_labels`` (the indices
    of the predicted classes, the model's ``pred_label``: its ``thr`` /
    ``topk`` / fitted per-class thresholds), ``pred_labels_scores`` and,
    with class names, ``pred_classes``. ``show_dir``/``show`` draw every
    predicted class (mmpretrain's visualizer draws ``pred_label``).

    Example:
        >>> from lmclip_mm.apis import MultiLabelClsInferencer
        >>> inferencer = MultiLabelClsInferencer(
        ...     'configs/lmclip_toy_mlt_tiny.py', pretrained='epoch_30.pth')
        >>> inferencer('img.jpg')[0]['pred_classes']
    """

    def postprocess(self, preds: List[DataSample], visualization,
                    return_datasamples=False):
        results = super().postprocess(preds, visualization,
                                      return_datasamples)
        if return_datasamples:
            return results
        for result, sample in zip(results, preds):
            labels = sample.pred_label.tolist() \
                if 'pred_label' in sample else [result['pred_label']]
            score = sample.pred_score
            result['pred_labels'] = labels
            result['pred_labels_scores'] = [float(score[i]) for i in labels]
            if self.classes is not None:
                result['pred_classes'] = [self.classes[i] for i in labels]
        return results
