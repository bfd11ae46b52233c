"""LM-CLIP: a fine-tuned open_clip model as a multi-label classifier."""
import warnings
from typing import Dict, List, Optional, Sequence

import open_clip
import torch
import torch.nn.functional as F
from mmpretrain.models.classifiers import BaseClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample, label_to_onehot

from ..utils.open_clip_helpers import (create_clip_model, encode_image,
                                       encode_text, encode_texts_packed,
                                       eot_truncate, sdpa_attention,
                                       supports_packing)

__all__ = ['LMCLIPClassifier']

#: The paper's normalisation (ImageNet statistics, BGR images -> RGB).
DEFAULT_DATA_PREPROCESSOR = dict(
    type='ClsDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

SCORE_ACTIVATIONS = ('none', 'softmax', 'sigmoid')

#: ``thr`` of the default decision rule, on the softmax over the classes
#: (see :class:`LMCLIPClassifier`, "Predicted labels").
DEFAULT_THR = 0.1


def _save_classes_metadata(module, state_dict, prefix, local_metadata):
    """State-dict post hook: the class names and the prompt template go to
    this module's ``state_dict._metadata`` entry (never a state-dict
    value: those are tensors only)."""
    if module.classes is not None:
        local_metadata[module.METADATA_CLASSES] = list(module.classes)
    local_metadata[module.METADATA_TEMPLATE] = module.prompt_template


@MODELS.register_module()
class LMCLIPClassifier(BaseClassifier):
    """LM-CLIP (Timmermann et al., IEEE Access 2025) on open_clip.

    The logits of an image are ``s * cos(image, prompt_c)`` for the class
    prompts ``prompt_template.format(class_name)``, with ``s`` CLIP's
    (learned) logit scale. Every CLIP parameter trains (the text tower gives
    the class embeddings, ``logit_scale`` included). The training loss is
    ``loss_bal`` (a multi-label loss on the logits, by default the Balanced
    Asymmetric Loss, whose ``loss_weight`` is the paper's lambda) plus
    ``loss_contrastive`` (CLIP's image-caption InfoNCE on the captions of the
    batch, ``data_sample.caption``).

    The class names (and, for the loss class weights, ``class_counts`` and
    ``num_train_images``) come from the dataset: the
    :class:`~lmclip_mm.engine.hooks.DatasetMetaHook` passes the dataset's
    ``metainfo`` to :meth:`set_dataset_meta`. The state dict holds tensors
    only; the class names travel with a checkpoint in its
    ``meta['dataset_meta']`` and in the state dict's ``_metadata``, and are
    restored on loading, so a loaded checkpoint predicts without a
    dataset.

    **Predicted labels.** ``predict`` sets, as mmpretrain's
    ``MultiLabelClsHead``, ``pred_score`` (the ``(C,)`` scores the AP metrics
    rank, per ``score_activation``; raw ``s * cos`` logits by default) and
    ``pred_label`` (the indices of the predicted classes). The logits are
    CLIP's scaled cosines (``s`` ~ 10-100): a sigmoid of them saturates at
    1.0 for most classes, so the decision is taken on the softmax over the
    classes (CLIP's zero-shot activation and the paper's evaluation
    protocol), where a class holding at least ``thr`` of the probability
    mass is predicted. An image with k confident classes gives each about
    1/k, so the default ``thr=0.1`` keeps up to ~10 co-occurring classes
    while ignoring the long flat tail of unrelated classes (VOC 20 / COCO
    80 classes, 1.4 / 2.9 labels per image). ``thr``/``topk`` as
    mmpretrain's head; per-class thresholds fitted on held-out data (buffer
    ``class_thresholds``, saved in checkpoints) take precedence.

    Args:
        clip (dict): the open_clip model: ``model_name`` (e.g.
            ``'ViT-B-16'``, ``'RN50'``, ``'lmclip-tiny-vit'``),
            ``pretrained`` (None, a tag like ``'openai'`` or a weights file;
            see :func:`~lmclip_mm.models.utils.create_clip_model`) and any
            other :func:`open_clip.create_model` argument.
        classes (sequence of str, optional): class names. Defaults to None:
            taken from the dataset's metainfo. Explicit names win over the
            dataset's (e.g. friendlier prompt words) but must be as many.
        prompt_template (str): the class prompt. Defaults to
            ``'a photo of a {}'``.
        loss (dict): the multi-label classification loss on the (N, C)
            logits. Defaults to ``dict(type='BalancedAsymmetricLoss')``.
        contrastive_loss (dict, optional): the image-caption loss; None
            disables it. Defaults to ``dict(type='CLIPContrastiveLoss')``.
        class_weight_power (float, optional): ``s`` of the loss class
            weights ``w_c = r_c ** s / max(r ** s)``, ``r_c = N / n_c`` (from
            the dataset's ``class_counts`` and ``num_train_images``; the
            :class:`~lmclip_mm.engine.hooks.DatasetMetaHook` counts them with
            ``get_cat_ids`` when a dataset's metainfo lacks them, e.g.
            mmpretrain's ``MultiLabelDataset`` and ``VOC``). None: no class
            weights.
        caption_prefix (str): a training sample without a ``caption`` (e.g.
            from mmpretrain's own datasets) gets the template caption
            ``caption_prefix + ', '.join(its class names)`` (the template of
            :class:`~lmclip_mm.datasets.LongTailMultiLabelDataset`).
            Defaults to ``'a photo of a '``.
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
        logit_scale_max (float, optional): upper bound of the logit scale,
            ``s = min(exp(logit_scale), logit_scale_max)`` (e.g. CLIP
            pre-training's 100; note that the bound also stops the gradient
            of ``logit_scale`` while ``s`` is above it, and OpenAI's weights
            start at ``exp(logit_scale) = 100.0000076``). Defaults to None:
            ``s = exp(logit_scale)``, as OpenAI's CLIP forward.
        data_preprocessor (dict, optional): a ``ClsDataPreprocessor`` config
            is merged into the default: ImageNet mean/std, ``to_rgb=True``
            (the paper's normalisation). Other types are used as given.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 clip: dict,
                 classes: Optional[Sequence[str]] = None,
                 prompt_template: str = 'a photo of a {}',
                 loss: dict = dict(type='BalancedAsymmetricLoss'),
                 contrastive_loss: Optional[dict] = dict(
                     type='CLIPContrastiveLoss'),
                 class_weight_power: Optional[float] = None,
                 score_activation: str = 'none',
                 thr: Optional[float] = None,
                 topk: Optional[int] = None,
                 caption_prefix: str = 'a photo of a ',
                 logit_scale_max: Optional[float] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(DEFAULT_DATA_PREPROCESSOR)
        elif isinstance(data_preprocessor, dict) and \
                data_preprocessor.get('type', 'ClsDataPreprocessor') in (
                    'ClsDataPreprocessor', 'mmpretrain.ClsDataPreprocessor'):
            data_preprocessor = {**DEFAULT_DATA_PREPROCESSOR,
                                 **data_preprocessor}
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(
            init_cfg=init_cfg, data_preprocessor=data_preprocessor)

        if not isinstance(clip, dict) or 'model_name' not in clip:
            raise ValueError("clip must be a dict with a 'model_name', e.g. "
                             "dict(model_name='ViT-B-16', pretrained='openai')"
                             f', got {clip!r}')
        if score_activation not in SCORE_ACTIVATIONS:
            raise ValueError(f'score_activation must be one of '
                             f'{SCORE_ACTIVATIONS}, got {score_activation!r}')
        if '{}' not in prompt_template:
            raise ValueError('prompt_template needs a {} for the class name, '
                             f'got {prompt_template!r}')
        if class_weight_power is not None and class_weight_power < 0:
            raise ValueError('class_weight_power must be None or >= 0, got '
                             f'{class_weight_power}')

        clip_kwargs = dict(clip)
        self.model_name = clip_kwargs.pop('model_name')
        pretrained = clip_kwargs.pop('pretrained', None)
        self.clip = create_clip_model(
            self.model_name, pretrained=pretrained, **clip_kwargs)
        self.tokenizer = open_clip.get_tokenizer(
            self.model_name,
            context_length=clip_kwargs.get('force_context_length'))

        if thr is None and topk is None:
            thr = DEFAULT_THR
        if thr is not None and not 0 <= thr <= 1:
            raise ValueError(f'thr must be in [0, 1], got {thr}')
        if topk is not None and (not isinstance(topk, int) or topk < 1):
            raise ValueError(f'topk must be a positive int, got {topk!r}')
        self.thr = thr
        self.topk = topk
        self.register_buffer('class_thresholds', None)
        #: set by TrainMAPHook: keep each training batch's logits
        self.keep_train_logits = False

        self.caption_prefix = caption_prefix
        self.prompt_template = prompt_template
        self.score_activation = score_activation
        self.logit_scale_max = logit_scale_max
        self.class_weight_power = class_weight_power
        self.loss_module = MODELS.build(loss)
        self.contrastive_loss = (
            MODELS.build(contrastive_loss)
            if contrastive_loss is not None else None)

        self._explicit_classes = classes is not None
        self.classes: Optional[tuple] = None
        # EOT-truncated prompt tokens, kept on the CPU: the text passes lay
        # their sequences out there (no device-to-host copy per step).
        self.class_tokens: Optional[torch.Tensor] = None
        self._classes_generation = 0
        self._text_cache = None
        if classes is not None:
            self.set_classes(classes)
        self.register_state_dict_post_hook(_save_classes_metadata)

    # ------------------------------------------------------------------
    # classes and dataset meta

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.classes is None else len(self.classes)

    def _device(self) -> torch.device:
        return self.clip.logit_scale.device

    def tokenize(self, texts: Sequence[str],
                 device: Optional[torch.device] = None) -> torch.Tensor:
        """Tokenise and EOT-truncate texts (CPU), then move them to
        ``device`` (default: the model's)."""
        tokens = eot_truncate(self.clip, self.tokenizer(list(texts)))
        return tokens.to(self._device() if device is None else device)

    def encode_texts(self, *token_sets: torch.Tensor) -> List[torch.Tensor]:
        """Text features (not normalised) of token tensors, one call.

        Packed (:func:`encode_texts_packed`) where the text tower allows it,
        else one :func:`~lmclip_mm.models.utils.encode_text` per tensor.
        """
        if supports_packing(self.clip):
            return encode_texts_packed(self.clip, token_sets)
        return [encode_text(self.clip, t.to(self._device()))
                for t in token_sets]

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
                self.__dict__['_lmclip_dataset_meta'] = dict(metainfo)
                return
            if missing:
                raise KeyError(
                    f'class_weight_power={self.class_weight_power} needs '
                    f'{missing} in the dataset metainfo')
            self._set_class_weights(metainfo)
        self.__dict__['_lmclip_dataset_meta'] = dict(metainfo)

    def _set_class_weights(self, metainfo: dict) -> None:
        if not hasattr(self.loss_module, 'set_class_weight'):
            raise TypeError(f'{type(self.loss_module).__name__} has no '
                            'set_class_weight for the class weights')
        from lmclip_mm.datasets.class_weights import class_weights
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
    # what a checkpoint carries beyond the weights
    #
    # The state dict holds tensors only (DDP broadcasts every entry, EMA
    # averages them, mmengine's tracer feeds them as inputs). The class
    # names and the prompt template travel
    #   * in the checkpoint's ``meta['dataset_meta']`` (mmengine's runner
    #     saves the train dataset's metainfo there; mmpretrain's
    #     ``init_model``/``get_model`` hand it to ``model._dataset_meta``), and
    #   * in the state dict's ``_metadata`` entry of this module, torch's
    #     place for non-tensor per-module data (it already holds the
    #     module's ``version``), so that a bare ``load_checkpoint(model, f)``
    #     or ``model.load_state_dict(sd)`` restores them too.

    #: keys of this module's entry in ``state_dict._metadata``
    METADATA_CLASSES = 'lmclip_classes'
    METADATA_TEMPLATE = 'lmclip_prompt_template'

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Checkpoints of lmclip_mm <= 0.1.0 kept the classes in a non-tensor
        # ``_extra_state`` entry: read it once and drop it.
        key = prefix + 'class_thresholds'
        if key in state_dict:
            self.class_thresholds = state_dict[key].detach().clone().to(
                torch.float32)
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
        meta = dict(self.__dict__.get('_lmclip_dataset_meta') or {})
        if self.classes is not None:
            meta['classes'] = list(self.classes)
        return meta

    @dataset_meta.setter
    def dataset_meta(self, meta: Optional[dict]) -> None:
        """Lenient counterpart of :meth:`set_dataset_meta` for loading:
        takes the classes (unless the model's are explicit) and, when the
        meta has the counts, the loss class weights."""
        meta = dict(meta or {})
        self.__dict__['_lmclip_dataset_meta'] = meta
        classes = meta.get('classes')
        if classes is not None and not self._explicit_classes:
            self.set_classes(classes)
        if self.class_weight_power is not None and all(
                k in meta for k in ('class_counts', 'num_train_images')) \
                and self.classes is not None:
            self._set_class_weights(meta)

    # mmpretrain.apis.get_model assigns ``model._dataset_meta``
    _dataset_meta = dataset_meta

    # ------------------------------------------------------------------
    # decision rule

    def set_class_thresholds(self, thresholds) -> None:
        """Per-class thresholds on the softmax probabilities (``(C,)``, in
        [0, 1]; None removes them). Saved with the model's state dict."""
        if thresholds is None:
            self.class_thresholds = None
            return
        thresholds = torch.as_tensor(
            thresholds, dtype=torch.float32).detach().clone().flatten()
        if self.num_classes is not None and \
                thresholds.numel() != self.num_classes:
            raise ValueError(f'{thresholds.numel()} thresholds for '
                             f'{self.num_classes} classes')
        if not torch.isfinite(thresholds).all() or (thresholds < 0).any() \
                or (thresholds > 1).any():
            raise ValueError('class thresholds must be in [0, 1]')
        self.class_thresholds = thresholds.to(self._device())

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

    # ------------------------------------------------------------------
    # caches

    def train(self, mode: bool = True):
        self._text_cache = None
        return super().train(mode)

    def _text_state_key(self) -> tuple:
        # Any in-place change of a text parameter (optimizer step,
        # load_state_dict) bumps its version counter.
        version = sum(p._version for n, p in self.clip.named_parameters()
                      if not n.startswith('visual.'))
        device = self._device()
        return (self._classes_generation, version, device,
                torch.is_autocast_enabled(device.type),
                torch.get_autocast_dtype(device.type))

    def class_embeddings(self) -> torch.Tensor:
        """L2-normalised text embeddings of the class prompts, (C, D).

        In eval mode without autograd (validation, test, predict) they are
        computed once and reused until the mode, the classes or a text
        parameter changes.
        """
        self._check_classes()
        use_cache = not self.training and not torch.is_grad_enabled()
        if use_cache:
            key = self._text_state_key()
            if self._text_cache is not None and self._text_cache[0] == key:
                return self._text_cache[1]
        with sdpa_attention(self._device()):
            embeddings = F.normalize(
                self.encode_texts(self.class_tokens)[0], dim=-1)
        if use_cache:
            self._text_cache = (key, embeddings)
        return embeddings

    def _check_classes(self) -> None:
        if self.class_tokens is None:
            raise RuntimeError(
                'LMCLIPClassifier has no classes: pass classes=[...] or add '
                "dict(type='DatasetMetaHook') to custom_hooks so they are "
                'taken from the dataset')

    # ------------------------------------------------------------------
    # forward

    def logit_scale(self) -> torch.Tensor:
        """``s = min(exp(logit_scale), logit_scale_max)`` (a scalar)."""
        scale = self.clip.logit_scale.exp().reshape(())
        if self.logit_scale_max is not None:
            scale = scale.clamp(max=self.logit_scale_max)
        return scale

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """Image embeddings (not normalised), (N, D)."""
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
            raise ValueError('inputs must be an (N, 3, H, W) tensor, got '
                             f'{getattr(inputs, "shape", type(inputs))}')
        image_size = getattr(self.clip.visual, 'image_size', None)
        if image_size is not None:
            if isinstance(image_size, int):
                image_size = (image_size, image_size)
            if tuple(inputs.shape[-2:]) != tuple(image_size):
                raise ValueError(
                    f'images are {tuple(inputs.shape[-2:])} but '
                    f'{self.model_name} expects {tuple(image_size)}: resize '
                    'them in the pipeline (the paper: Resize to 224x224, no '
                    "crop) or set clip=dict(force_image_size=...)")
        dtype = next(self.clip.visual.parameters()).dtype
        with sdpa_attention(inputs.device):
            return encode_image(self.clip, inputs.to(dtype))

    def _logits(self, image_features: torch.Tensor,
                classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        image = F.normalize(image_features, dim=-1)
        if classes is None:
            classes = self.class_embeddings()
        return self.logit_scale() * image @ classes.to(image.dtype).T

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        if mode == 'tensor':
            return self._logits(self.extract_feat(inputs))
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}".')

    def _targets(self, data_samples: List[DataSample],
                 num_classes: int) -> torch.Tensor:
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
        return target.to(self._device(), torch.float32)

    def template_caption(self, data_sample: DataSample) -> str:
        """``caption_prefix + ', '.join(class names)`` of a sample's labels
        (``gt_label``, or the positives of ``gt_score``)."""
        if 'gt_label' in data_sample:
            labels = data_sample.gt_label.flatten().tolist()
        elif 'gt_score' in data_sample:
            labels = torch.nonzero(
                data_sample.gt_score == 1).flatten().tolist()
        else:
            labels = []
        names = [self.classes[i] for i in labels
                 if 0 <= i < len(self.classes)]
        if not names:
            return self.caption_prefix.strip() or 'a photo'
        return self.caption_prefix + ', '.join(names)

    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> Dict[str, torch.Tensor]:
        image_features = self.extract_feat(inputs)
        self._check_classes()
        captions = classes = caption_features = None
        if self.contrastive_loss is not None:
            captions = [ds.get('caption') for ds in data_samples]
            for i, caption in enumerate(captions):
                if caption is None:
                    captions[i] = self.template_caption(data_samples[i])
                elif not isinstance(caption, str):
                    raise ValueError(
                        'the contrastive loss needs a caption (str) per '
                        f'sample, got {type(caption).__name__}')
            # the class prompts and the captions in one text pass
            class_features, caption_features = self.encode_texts(
                self.class_tokens, self.tokenize(captions, 'cpu'))
            classes = F.normalize(class_features, dim=-1)
        logits = self._logits(image_features, classes)
        target = self._targets(data_samples, logits.size(1))
        if target.size(0) != logits.size(0):
            raise ValueError(f'{target.size(0)} data samples for '
                             f'{logits.size(0)} images')
        if self.keep_train_logits:  # for TrainMAPHook
            self.__dict__['_last_train_logits'] = (
                logits.detach().float().cpu(), target.detach().cpu())
        losses = dict(loss_bal=self.loss_module(logits, target))
        if self.contrastive_loss is not None:
            losses['loss_contrastive'] = self.contrastive_loss(
                image_features, caption_features, self.logit_scale(),
                captions)
        return losses

    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        """``pred_score`` (C,) per image (raw logits or activated) and
        ``pred_label`` (the predicted classes, see the class docstring)."""
        with torch.no_grad():
            logits = self._logits(self.extract_feat(inputs)).float()
        if self.score_activation == 'softmax':
            scores = logits.softmax(dim=-1)
        elif self.score_activation == 'sigmoid':
            scores = logits.sigmoid()
        else:
            scores = logits
        if data_samples is None:
            data_samples = [DataSample() for _ in range(scores.size(0))]
        elif len(data_samples) != scores.size(0):
            raise ValueError(f'{len(data_samples)} data samples for '
                             f'{scores.size(0)} images')
        labels = self.predict_labels(logits)
        for data_sample, score, label in zip(data_samples, scores, labels):
            data_sample.set_pred_score(score).set_pred_label(label)
        return data_samples
