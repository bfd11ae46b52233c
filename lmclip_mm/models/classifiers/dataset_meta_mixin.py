"""Class names, prompt template and dataset meta of LM-CLIP, and what a
checkpoint carries of them beyond the weights."""
import warnings
from typing import Optional, Sequence

import torch

__all__ = ['DatasetMetaMixin']


def _save_classes_metadata(module, state_dict, prefix, local_metadata):
    """State-dict post hook: the class names and the prompt template go to
    this module's ``state_dict._metadata`` entry (never a state-dict
    value: those are tensors only)."""
    if module.classes is not None:
        local_metadata[module.METADATA_CLASSES] = list(module.classes)
    local_metadata[module.METADATA_TEMPLATE] = module.prompt_template


class DatasetMetaMixin:
    """The classes of a zero-shot-style classifier: their names, their
    prompts and the dataset meta they come from.

    The class names (and, for the loss class weights, ``class_counts`` and
    ``num_train_images``) come from the dataset: the
    :class:`~lmclip_mm.engine.hooks.DatasetMetaHook` passes the dataset's
    ``metainfo`` to :meth:`set_dataset_meta`; explicit names given to the
    model win (:meth:`_init_classes`). The prompts
    ``prompt_template.format(class_name)`` are tokenised once, in
    :meth:`set_classes`.

    **What a checkpoint carries beyond the weights.** The state dict holds
    tensors only (DDP broadcasts every entry, EMA averages them, mmengine's
    tracer feeds them as inputs). The class names and the prompt template
    travel

    * in the checkpoint's ``meta['dataset_meta']`` (mmengine's runner saves
      the train dataset's metainfo there; mmpretrain's
      ``init_model``/``get_model`` hand it to ``model._dataset_meta``), and
    * in the state dict's ``_metadata`` entry of this module, torch's place
      for non-tensor per-module data (it already holds the module's
      ``version``), so that a bare ``load_checkpoint(model, f)`` or
      ``model.load_state_dict(sd)`` restores them too,

    and are restored on loading, so a loaded checkpoint predicts without a
    dataset.

    Mix it into an ``nn.Module`` (before it in the bases) that defines
    ``tokenize(texts, device)`` and ``_device()``, and whose ``__init__``
    sets ``prompt_template``, ``class_weight_power`` and ``loss_module``
    (with ``set_class_weight``) and then calls :meth:`_init_classes`.
    """

    #: keys of this module's entry in ``state_dict._metadata``
    METADATA_CLASSES = 'lmclip_classes'
    METADATA_TEMPLATE = 'lmclip_prompt_template'

    def _init_classes(self, classes: Optional[Sequence[str]]) -> None:
        """Set up the classes (explicit ones, or None: from the dataset)."""
        self._explicit_classes = classes is not None
        #: the metainfo of :meth:`set_dataset_meta` (or ``dataset_meta``)
        self._lmclip_dataset_meta: Optional[dict] = None
        self.classes: Optional[tuple] = None
        # EOT-truncated prompt tokens, kept on the CPU: the text passes lay
        # their sequences out there (no device-to-host copy per step).
        self.class_tokens: Optional[torch.Tensor] = None
        self._classes_generation = 0
        self._text_cache = None
        if classes is not None:
            self.set_classes(classes)
        self.register_state_dict_post_hook(_save_classes_metadata)

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.classes is None else len(self.classes)

    def set_classes(self, classes: Sequence[str]) -> None:
        """Set the class names; their prompts are tokenised once here."""
        if isinstance(classes, str) or not all(
                isinstance(c, str) for c in classes) or len(classes) == 0:
            raise ValueError('classes must be a non-empty sequence of str, '
                             f'got {classes!r}')
        classes = tuple(classes)
        if classes == self.classes and self.class_tokens is not None:
            return
        self.classes = classes
        self.class_tokens = self.tokenize(
            [self.prompt_template.format(c) for c in classes], 'cpu')
        self._classes_generation += 1
        self._text_cache = None

    def _check_classes(self) -> None:
        if self.class_tokens is None:
            raise RuntimeError(
                'LMCLIPClassifier has no classes: pass classes=[...] or add '
                "dict(type='DatasetMetaHook') to custom_hooks so they are "
                'taken from the dataset')

    def set_dataset_meta(self, metainfo: dict, training: bool = True) -> None:
        """Take the class names and the class weights from a dataset.

        Args:
            metainfo (dict): the dataset's ``metainfo``: ``classes``, and,
                when ``class_weight_power`` is set, ``class_counts`` (train
                images per class) and ``num_train_images``.
            training (bool): the metainfo is the train set's. With False
                (validation, test) missing counts keep the class weights
                the model has (they only matter for the loss).
        """
        if not metainfo or 'classes' not in metainfo:
            raise KeyError("the dataset metainfo has no 'classes'")
        classes = tuple(metainfo['classes'])
        if self._explicit_classes:
            if len(classes) != len(self.classes):
                raise ValueError(
                    f'the model has {len(self.classes)} explicit classes but '
                    f'the dataset has {len(classes)}')
        else:
            self.set_classes(classes)
        if self.class_weight_power is not None:
            missing = [k for k in ('class_counts', 'num_train_images')
                       if k not in metainfo]
            if missing and not training:
                self._lmclip_dataset_meta = dict(metainfo)
                return
            if missing:
                raise KeyError(
                    f'class_weight_power={self.class_weight_power} needs '
                    f'{missing} in the dataset metainfo')
            self._set_class_weights(metainfo)
        self._lmclip_dataset_meta = dict(metainfo)

    def _set_class_weights(self, metainfo: dict) -> None:
        if not hasattr(self.loss_module, 'set_class_weight'):
            raise TypeError(f'{type(self.loss_module).__name__} has no '
                            'set_class_weight for the class weights')
        from lmclip_mm.datasets.class_stats import class_weights
        weights = class_weights(metainfo['class_counts'],
                                metainfo['num_train_images'],
                                self.class_weight_power)
        if len(weights) != len(self.classes):
            raise ValueError(f'{len(weights)} class_counts for '
                             f'{len(self.classes)} classes')
        self.loss_module.set_class_weight(
            torch.as_tensor(weights, dtype=torch.float32,
                            device=self._device()))

    # ------------------------------------------------------------------
    # checkpoints

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Checkpoints of lmclip_mm <= 0.1.0 kept the classes in a non-tensor
        # ``_extra_state`` entry: read it once and drop it.
        legacy = state_dict.pop(prefix + '_extra_state', None)
        if isinstance(legacy, dict):
            self._restore_classes(legacy.get('classes'),
                                  legacy.get('prompt_template'))
        if local_metadata:
            self._restore_classes(local_metadata.get(self.METADATA_CLASSES),
                                  local_metadata.get(self.METADATA_TEMPLATE))
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _restore_classes(self, classes, prompt_template=None) -> None:
        """Classes saved with a checkpoint: taken when the model has none;
        a model's own classes are kept (with a warning if they differ)."""
        if classes is None:
            return
        classes = tuple(classes)
        if self.classes is None:
            if prompt_template is not None and \
                    prompt_template != self.prompt_template:
                warnings.warn(
                    'the checkpoint was trained with the prompt template '
                    f'{prompt_template!r}, the model uses '
                    f'{self.prompt_template!r}')
            self.set_classes(classes)
        elif classes != self.classes:
            warnings.warn('the checkpoint\'s classes differ from the model\'s;'
                          ' keeping the model\'s classes')

    @property
    def dataset_meta(self) -> dict:
        """The dataset meta the model was given, with its ``classes``.

        mmpretrain's ``init_model``/``get_model`` set it (as
        ``_dataset_meta``) from a checkpoint's ``meta['dataset_meta']``;
        ``ImageClassificationInferencer`` reads the class names from it.
        """
        meta = dict(self._lmclip_dataset_meta or {})
        if self.classes is not None:
            meta['classes'] = list(self.classes)
        return meta

    @dataset_meta.setter
    def dataset_meta(self, meta: Optional[dict]) -> None:
        """Lenient counterpart of :meth:`set_dataset_meta` for loading:
        takes the classes (unless the model's are explicit) and, when the
        meta has the counts, the loss class weights."""
        meta = dict(meta or {})
        self._lmclip_dataset_meta = meta
        classes = meta.get('classes')
        if classes is not None and not self._explicit_classes:
            self.set_classes(classes)
        if self.class_weight_power is not None and all(
                k in meta for k in ('class_counts', 'num_train_images')) \
                and self.classes is not None:
            self._set_class_weights(meta)

    # mmpretrain.apis.get_model assigns ``model._dataset_meta``
    _dataset_meta = dataset_meta
