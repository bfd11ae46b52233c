# Copyright (c) lmclip_mm authors.
"""mmpretrain's image-classification inferencer with multi-label output."""
from typing import Callable, List

from mmcv.transforms import Compose
from mmengine.dataset import default_collate
from mmpretrain.apis import ImageClassificationInferencer
from mmpretrain.registry import TRANSFORMS
from mmpretrain.structures import DataSample

_LOADERS = ('LoadImageFromFile', 'mmpretrain.LoadImageFromFile',
            'mmcv.LoadImageFromFile')
_SELF_LOADING = ('LoadResizedImage', 'mmpretrain.LoadResizedImage')

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

    def _init_pipeline(self, cfg) -> Callable:
        pipeline_cfg = cfg.test_dataloader.dataset.pipeline
        # A test pipeline that starts with LoadResizedImage (the paper and
        # toy configs) takes a file path or an array itself: run it whole.
        self._self_loading = bool(pipeline_cfg) and pipeline_cfg[0].get(
            'type') in _SELF_LOADING
        if self._self_loading:
            self._loader_cfg = None
            return Compose([TRANSFORMS.build(t) for t in pipeline_cfg])
        # mmpretrain's inferencer drops the config's LoadImageFromFile and
        # decodes files with mmcv.imread's defaults (cv2, EXIF-rotated).
        # Keep the config's loader for file paths instead, so inference sees
        # the images exactly as the test pipeline does.
        self._loader_cfg = next(
            (dict(t) for t in cfg.test_dataloader.dataset.pipeline
             if t.get('type') in _LOADERS), None)
        return super()._init_pipeline(cfg)

    def preprocess(self, inputs, batch_size: int = 1):
        if getattr(self, '_self_loading', False):
            def to_results(input_):
                if isinstance(input_, str):
                    return dict(img_path=input_)
                return dict(img=input_)  # an array: resized by the pipeline

            pipeline = Compose([to_results, self.pipeline])
            chunked = self._get_chunk_data(map(pipeline, inputs), batch_size)
            yield from map(default_collate, chunked)
            return
        if getattr(self, '_loader_cfg', None) is None:
            yield from super().preprocess(inputs, batch_size)
            return
        loader = TRANSFORMS.build(self._loader_cfg)

        def load_image(input_):
            if isinstance(input_, str):
                results = loader(dict(img_path=input_))
                if results is None:
                    raise ValueError(f'Failed to read image {input_}.')
                img = results['img']
            else:  # an array: as mmpretrain's inferencer
                img = input_
            return dict(img=img, img_shape=img.shape[:2],
                        ori_shape=img.shape[:2])

        pipeline = Compose([load_image, self.pipeline])
        chunked_data = self._get_chunk_data(map(pipeline, inputs), batch_size)
        yield from map(default_collate, chunked_data)

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
