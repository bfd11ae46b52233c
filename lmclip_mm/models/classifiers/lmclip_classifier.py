"""LM-CLIP: a fine-tuned open_clip model as a multi-label classifier."""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmpretrain.models.classifiers import BaseClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..heads.lmclip_head import LMCLIPHead
from ..utils.clip_factory import create_clip_model, load_clip_weights
from ..utils.clip_tokenizer import create_tokenizer
from ..utils.fast_encoders import (encode_image, encode_text,
                                   encode_texts_packed, eot_truncate,
                                   sdpa_attention, supports_packing)
from ..utils.flat_child import ChildAttribute, flatten_child
from .dataset_meta_mixin import DatasetMetaMixin

__all__ = ['LMCLIPClassifier']

#: The paper's normalisation (ImageNet statistics, BGR images -> RGB).
DEFAULT_DATA_PREPROCESSOR = dict(
    type='ClsDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)


@MODELS.register_module()
class LMCLIPClassifier(DatasetMetaMixin, BaseClassifier):
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
    dataset (see :class:`.DatasetMetaMixin`).

    **Predicted labels.** ``predict`` sets ``pred_score`` and ``pred_label``
    as mmpretrain's ``MultiLabelClsHead``. The decision rule and the losses
    are the :attr:`head`'s (:class:`~lmclip_mm.models.heads.LMCLIPHead`,
    which explains the rule); ``loss_module``, ``contrastive_loss``,
    ``thr``, ``topk``, ``score_activation`` and ``class_thresholds`` read
    and set the head's.

    Args:
        clip (dict): the open_clip model: ``model_name`` (e.g.
            ``'ViT-B-16'``, ``'RN50'``, ``'lmclip-tiny-vit'``),
            ``pretrained`` (None, a tag like ``'openai'`` or a weights file;
            see :func:`~lmclip_mm.models.utils.create_clip_model`) and any
            other :func:`open_clip.create_model` argument. The model is
            built for the ``pretrained`` weights (a tag's activation and
            preprocessing) and :meth:`init_weights` loads them, as
            MMPretrain's models load their pretrained backbones: the runner
            calls it before training; a checkpoint loaded instead (``test.py``,
            ``get_model(name, pretrained=CKPT)``, the inferencers) needs no
            CLIP weights.
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
            weights (:func:`~lmclip_mm.datasets.class_stats.class_weights`)
            of the dataset's ``class_counts`` and ``num_train_images``
            (which :class:`~lmclip_mm.engine.hooks.DatasetMetaHook` counts
            for datasets that lack them). None: no class weights.
        caption_prefix (str): a training sample without a ``caption`` (e.g.
            from mmpretrain's own datasets) gets the template caption
            ``caption_prefix + ', '.join(its class names)`` (the template of
            :class:`~lmclip_mm.datasets.LongTailMultiLabelDataset`).
            Defaults to ``'a photo of a '``.
        score_activation (str), thr (float, optional), topk (int,
            optional): the decision rule of the head, see
            :class:`~lmclip_mm.models.heads.LMCLIPHead` (defaults: raw
            logits as ``pred_score``, ``thr=0.1`` on the softmax over the
            classes; fitted per-class thresholds replace both).
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

    Attributes:
        head (LMCLIPHead): the losses and the decision rule, built from
            ``loss``, ``contrastive_loss``, ``score_activation``, ``thr``
            and ``topk``. Its state-dict entries keep the keys they had
            before it existed (``loss_module.class_weight``,
            ``class_thresholds``), so checkpoints load either way.
        keep_train_logits (bool): when True (set by
            :class:`~lmclip_mm.engine.hooks.TrainMAPHook` for the epoch),
            each :meth:`loss` call publishes ``last_train_logits``.
            Defaults to False.
        last_train_logits (tuple[Tensor, Tensor] | None): the ``(N, C)``
            logits of the last :meth:`loss` call (detached, float32, CPU)
            and its multi-hot targets (CPU), when ``keep_train_logits`` is
            on; a reader takes them and may reset the attribute to None.
    """

    loss_module = ChildAttribute('head')
    contrastive_loss = ChildAttribute('head')
    thr = ChildAttribute('head')
    topk = ChildAttribute('head')
    score_activation = ChildAttribute('head')
    class_thresholds = ChildAttribute('head')

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
        if '{}' not in prompt_template:
            raise ValueError('prompt_template needs a {} for the class name, '
                             f'got {prompt_template!r}')
        if class_weight_power is not None and class_weight_power < 0:
            raise ValueError('class_weight_power must be None or >= 0, got '
                             f'{class_weight_power}')
        # built (and its arguments checked) before the CLIP, registered
        # after it: the module order of the state dict stays as it was
        head = LMCLIPHead(
            loss=loss, contrastive_loss=contrastive_loss,
            score_activation=score_activation, thr=thr, topk=topk)

        clip_kwargs = dict(clip)
        self.model_name = clip_kwargs.pop('model_name')
        pretrained = clip_kwargs.pop('pretrained', None)
        # first: a missing package of the tokenizer fails before the build
        tokenizer = create_tokenizer(
            self.model_name, clip_kwargs.get('force_context_length'))
        self.clip = create_clip_model(
            self.model_name, pretrained=pretrained, load_weights=False,
            **clip_kwargs)
        self.clip_pretrained = pretrained
        self._clip_cache_dir = clip_kwargs.get('cache_dir')
        #: the ``pretrained`` CLIP weights are still to be loaded by
        #: :meth:`init_weights`
        self.clip_weights_pending = bool(pretrained)
        self.tokenizer = tokenizer
        self.head = head
        flatten_child(self, 'head')  # the keys of the checkpoints stay

        self.keep_train_logits = False
        self.last_train_logits = None
        self.caption_prefix = caption_prefix
        self.prompt_template = prompt_template
        self.logit_scale_max = logit_scale_max
        self.class_weight_power = class_weight_power
        self._init_classes(classes)

    def __setattr__(self, name, value):
        if not ChildAttribute.set_module(self, name, value):
            super().__setattr__(name, value)

    # ------------------------------------------------------------------
    # weights

    def init_weights(self):
        """mmengine's initialisation, then the ``clip.pretrained`` weights
        (once; the runner calls this before training). Without
        ``pretrained``, the CLIP keeps its random initialisation."""
        super().init_weights()
        if self.clip_weights_pending:
            load_clip_weights(self.clip, self.model_name,
                              self.clip_pretrained, self._clip_cache_dir)
            self.clip_weights_pending = False
            self._text_cache = None
        elif not self.clip_pretrained:
            MMLogger.get_current_instance().info(
                f'open_clip model {self.model_name}: random initialisation '
                '(model.clip.pretrained is None)')

    def skip_pretrained_weights(self, reason: str) -> None:
        """Do not load the ``clip.pretrained`` weights in
        :meth:`init_weights`: a checkpoint replaces them (``reason``, logged;
        the :class:`~lmclip_mm.engine.runner.LMCLIPRunner` calls this when
        it resumes)."""
        if self.clip_weights_pending:
            MMLogger.get_current_instance().info(
                f'open_clip model {self.model_name}: the '
                f'{self.clip_pretrained!r} weights are not loaded: {reason}')
            self.clip_weights_pending = False

    # ------------------------------------------------------------------
    # text

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

    # ------------------------------------------------------------------
    # decision rule (the head's)

    def set_class_thresholds(self, thresholds) -> None:
        """Per-class thresholds on the softmax probabilities (``(C,)``, in
        [0, 1]; None removes them). Saved with the model's state dict."""
        self.head.set_class_thresholds(thresholds, self.num_classes,
                                       self._device())

    decision_scores = staticmethod(LMCLIPHead.decision_scores)

    def predict_labels(self, logits: torch.Tensor) -> List[torch.Tensor]:
        """``pred_label`` (class indices) of each row of ``logits``."""
        return self.head.predict_labels(logits)

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
            # ints: under tracing (get_flops.py) the sizes are tensors
            size = tuple(int(s) for s in inputs.shape[-2:])
            if size != tuple(image_size):
                raise ValueError(
                    f'images are {size} but '
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
        """The head's losses; with ``keep_train_logits``, also publishes
        ``last_train_logits`` (see the class docstring)."""
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
        target = self.head.get_targets(data_samples, logits)
        if self.keep_train_logits:
            self.last_train_logits = (logits.detach().float().cpu(),
                                      target.detach().cpu())
        return self.head.loss(
            logits, target, image_features, caption_features,
            self.logit_scale() if captions is not None else None, captions)

    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        """``pred_score`` (C,) per image (raw logits or activated) and
        ``pred_label`` (the predicted classes, see the class docstring)."""
        with torch.no_grad():
            logits = self._logits(self.extract_feat(inputs)).float()
        return self.head.predict(logits, data_samples)
