"""Pass the dataset's metainfo (class names, class counts) to the model."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class DatasetMetaHook(Hook):
    """Call ``model.set_dataset_meta(dataset.metainfo)`` before each phase.

    Before training, validation and testing, the ``metainfo`` of that
    phase's dataset (``classes``, ``class_counts``, ``num_train_images``,
    ...) is passed to the model (unwrapped from DDP & co.), so configs never
    re-type class names and the loss class weights are computed from the
    data. It runs after the checkpoint loading of ``load_from``/``resume``,
    so the dataset's metainfo wins over the one saved in a checkpoint.

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
        model.set_dataset_meta(metainfo)

    def before_train(self, runner) -> None:
        self._apply(runner, 'train_loop')

    def before_val(self, runner) -> None:
        self._apply(runner, 'val_loop')

    def before_test(self, runner) -> None:
        self._apply(runner, 'test_loop')
