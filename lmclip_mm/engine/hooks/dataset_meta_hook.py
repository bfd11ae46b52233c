"""Pass the dataset's metainfo (class names, class counts) to the model."""
import inspect
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from lmclip_mm.datasets import class_stats
from lmclip_mm.datasets.mlt_format import DatasetFormatError

#: the metainfo keys of the loss class weights
COUNT_KEYS = ('class_counts', 'num_train_images')
#: the metainfo keys of the head/middle/tail groups
GROUP_KEYS = ('head_classes', 'middle_classes', 'tail_classes')


def count_classes(dataset) -> Optional[tuple]:
    """``(class_counts, num_images)`` of a dataset from ``get_cat_ids``
    (images per class, :func:`lmclip_mm.datasets.class_stats.count_classes`),
    or None when the dataset has no ``get_cat_ids`` or no ``classes``.

    Raises:
        ValueError: a class id outside the dataset's classes.
    """
    get_cat_ids = getattr(dataset, 'get_cat_ids', None)
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    if not callable(get_cat_ids) or classes is None:
        return None
    labels = [get_cat_ids(idx) for idx in range(len(dataset))]
    return class_stats.count_classes(labels, len(classes)), len(dataset)


@HOOKS.register_module()
class DatasetMetaHook(Hook):
    """Call ``model.set_dataset_meta(dataset.metainfo)`` before each phase.

    Before training, validation and testing, the ``metainfo`` of that
    phase's dataset (``classes``, ``class_counts``, ``num_train_images``,
    ...) is passed to the model (unwrapped from DDP & co.), so configs never
    re-type class names and the loss class weights are computed from the
    data. It runs after the checkpoint loading of ``load_from``/``resume``,
    so the dataset's metainfo wins over the one saved in a checkpoint.

    The loss class weights come from the TRAIN dataset's ``class_counts``
    / ``num_train_images``: the images trained on (for
    :class:`~lmclip_mm.datasets.LongTailMultiLabelDataset` with
    ``holdout_val=True``, the train list without the val images), the same
    images :class:`~lmclip_mm.datasets.ClassAwareRepeatSampler` counts its
    rates over. Before validation and testing, when the phase's dataset has
    the same ``classes``, the model gets those train counts instead of the
    phase dataset's own, so the loss class weights never change after
    training started (a test split does not know which images were held
    out).

    Datasets whose metainfo has no ``class_counts`` / ``num_train_images``
    (mmpretrain's ``MultiLabelDataset``, ``VOC``, ...) get them counted
    from the train dataset with ``get_cat_ids`` before training, so that
    LM-CLIP's loss class weights need no config change; and when the
    evaluation dataset's metainfo has no ``head_classes`` /
    ``middle_classes`` / ``tail_classes``, the train dataset's groups are
    given to the evaluator, so that ``LongTailAveragePrecision`` reports
    (and ``save_best`` finds) the group mAPs: those of its metainfo, else
    the groups of its train counts (head ``n_c >= 100``, tail ``n_c < 20``,
    as the benchmarks).

    Use it with ``custom_hooks = [dict(type='DatasetMetaHook')]``. For any
    model (e.g. MMPretrain's ``ImageClassifier``) the evaluators get the
    groups; a model with ``set_dataset_meta`` (LM-CLIP's classifier) also
    gets the metainfo: its class names, prompts and loss class weights.
    """

    priority = 'VERY_HIGH'
    #: the train phase's counts and groups, for the evaluation phases
    _train_counts: Optional[dict] = None
    _train_groups: Optional[dict] = None

    def _apply(self, runner, loop_name: str) -> None:
        loop = getattr(runner, loop_name, None)
        dataloader = getattr(loop, 'dataloader', None)
        dataset = getattr(dataloader, 'dataset', None)
        metainfo: Optional[dict] = getattr(dataset, 'metainfo', None)
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        takes_meta = hasattr(model, 'set_dataset_meta')
        if not metainfo:
            if takes_meta:
                raise RuntimeError(
                    f'DatasetMetaHook: the dataset of {loop_name} has no '
                    'metainfo to pass to the model')
            return
        metainfo = dict(metainfo)
        self._check_num_classes(model, dataset, metainfo, loop_name)
        training = loop_name == 'train_loop'
        if training and not all(k in metainfo for k in COUNT_KEYS):
            counts = count_classes(dataset)
            if counts is not None:
                metainfo.setdefault('class_counts', counts[0])
                metainfo.setdefault('num_train_images', counts[1])
        if training:
            self._remember_train_stats(metainfo)
        else:
            self._use_train_counts(metainfo)
            self._give_groups_to_evaluator(loop)
        if not takes_meta:
            if training:
                print_log(
                    f'DatasetMetaHook: {type(model).__name__} has no '
                    'set_dataset_meta: the class counts and head/middle/'
                    'tail groups go to the evaluators only',
                    logger='current')
            return
        if 'training' in inspect.signature(
                model.set_dataset_meta).parameters:
            model.set_dataset_meta(metainfo, training=training)
        else:
            model.set_dataset_meta(metainfo)

    @staticmethod
    def _check_num_classes(model, dataset, metainfo: dict,
                           loop_name: str) -> None:
        """A model whose head (or one-hot data preprocessor) has another
        number of classes than the dataset would train and report on
        classes that do not exist (or crash later): one error naming both
        numbers and the labels file."""
        classes = metainfo.get('classes')
        if classes is None:
            return
        parts = (('model.head.num_classes', getattr(model, 'head', None)),
                 ('model.data_preprocessor.num_classes',
                  getattr(model, 'data_preprocessor', None)))
        for key, part in parts:
            num = getattr(part, 'num_classes', None)
            if isinstance(num, int) and num != len(classes):
                source = getattr(dataset, 'labels_file', None) or \
                    type(dataset).__name__
                raise DatasetFormatError(
                    f'{key} is {num} but the dataset of {loop_name} has '
                    f'{len(classes)} classes ({source}): set num_classes = '
                    f'{len(classes)} in the config')

    def _remember_train_stats(self, metainfo: dict) -> None:
        """Keep the train counts and groups for the evaluation phases."""
        self._train_counts = None
        self._train_groups = None
        if all(k in metainfo for k in COUNT_KEYS):
            self._train_counts = dict(
                classes=tuple(metainfo.get('classes') or ()),
                **{k: metainfo[k] for k in COUNT_KEYS})
        if all(k in metainfo for k in GROUP_KEYS):
            self._train_groups = {k: list(metainfo[k]) for k in GROUP_KEYS}
        elif 'class_counts' in metainfo:
            head, middle, tail = class_stats.class_groups(
                metainfo['class_counts'])
            self._train_groups = dict(
                head_classes=head, middle_classes=middle, tail_classes=tail)

    def _use_train_counts(self, metainfo: dict) -> None:
        """Give the model the train counts (the loss class weights) when
        the evaluation dataset has the same classes."""
        train = self._train_counts
        if train and tuple(metainfo.get('classes') or ()) == \
                train['classes']:
            metainfo.update({k: train[k] for k in COUNT_KEYS})

    def _give_groups_to_evaluator(self, loop) -> None:
        groups = self._train_groups
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
