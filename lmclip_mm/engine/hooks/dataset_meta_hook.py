"""Pass the dataset's metainfo (class names, class counts) to the model."""
import inspect
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


def count_classes(dataset) -> Optional[tuple]:
    """``(class_counts, num_images)`` of a dataset from ``get_cat_ids``
    (images per class), or None when the dataset has no ``get_cat_ids`` or
    no ``classes``."""
    get_cat_ids = getattr(dataset, 'get_cat_ids', None)
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    if not callable(get_cat_ids) or classes is None:
        return None
    counts = [0] * len(classes)
    for idx in range(len(dataset)):
        for c in set(int(i) for i in get_cat_ids(idx)):
            if 0 <= c < len(counts):
                counts[c] += 1
    return counts, len(dataset)


@HOOKS.register_module()
class DatasetMetaHook(Hook):
    """Call ``model.set_dataset_meta(dataset.metainfo)`` before each phase.

    Before training, validation and testing, the ``metainfo`` of that
    phase's dataset (``classes``, ``class_counts``, ``num_train_images``,
    ...) is passed to the model (unwrapped from DDP & co.), so configs never
    re-type class names and the loss class weights are computed from the
    data. It runs after the checkpoint loading of ``load_from``/``resume``,
    so the dataset's metainfo wins over the one saved in a checkpoint.

    Datasets whose metainfo has no ``class_counts`` / ``num_train_images``
    (mmpretrain's ``MultiLabelDataset``, ``VOC``, ...) get them counted
    from the train dataset with ``get_cat_ids`` before training, so that
    LM-CLIP's loss class weights need no config change; and when the
    evaluation dataset's metainfo has no ``head_classes`` /
    ``middle_classes`` / ``tail_classes``, the groups of those train counts
    (head ``n_c >= 100``, tail ``n_c < 20``, as the benchmarks) are given
    to the evaluator, so that ``LongTailAveragePrecision`` reports (and
    ``save_best`` finds) the group mAPs.

    Use it with ``custom_hooks = [dict(type='DatasetMetaHook')]``. Models
    without ``set_dataset_meta`` are left alone (with a warning).
    """

    priority = 'VERY_HIGH'

    def _apply(self, runner, loop_name: str) -> None:
        loop = getattr(runner, loop_name, None)
        dataloader = getattr(loop, 'dataloader', None)
        dataset = getattr(dataloader, 'dataset', None)
        metainfo: Optional[dict] = getattr(dataset, 'metainfo', None)
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        if not hasattr(model, 'set_dataset_meta'):
            print_log(
                f'DatasetMetaHook: {type(model).__name__} has no '
                'set_dataset_meta; nothing done',
                logger='current',
                level=30)
            return
        if not metainfo:
            raise RuntimeError(
                f'DatasetMetaHook: the dataset of {loop_name} has no '
                'metainfo to pass to the model')
        metainfo = dict(metainfo)
        training = loop_name == 'train_loop'
        if training and not all(k in metainfo for k in (
                'class_counts', 'num_train_images')):
            counts = count_classes(dataset)
            if counts is not None:
                metainfo.setdefault('class_counts', counts[0])
                metainfo.setdefault('num_train_images', counts[1])
        if training and 'class_counts' in metainfo:
            from lmclip_mm.datasets.mlt_format import class_groups
            head, middle, tail = class_groups(metainfo['class_counts'])
            self._train_groups = dict(
                head_classes=list(head), middle_classes=list(middle),
                tail_classes=list(tail))
        elif not training:
            self._give_groups_to_evaluator(loop)
        if 'training' in inspect.signature(
                model.set_dataset_meta).parameters:
            model.set_dataset_meta(metainfo, training=training)
        else:
            model.set_dataset_meta(metainfo)

    def _give_groups_to_evaluator(self, loop) -> None:
        groups = getattr(self, '_train_groups', None)
        evaluator = getattr(loop, 'evaluator', None)
        if not groups or evaluator is None:
            return
        meta = dict(getattr(evaluator, 'dataset_meta', None) or {})
        if any(k in meta for k in groups):
            return
        meta.update(groups)
        evaluator.dataset_meta = meta

    def before_train(self, runner) -> None:
        self._apply(runner, 'train_loop')

    def before_val(self, runner) -> None:
        self._apply(runner, 'val_loop')

    def before_test(self, runner) -> None:
        self._apply(runner, 'test_loop')
