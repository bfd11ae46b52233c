# Copyright (c) lmclip_mm authors.
"""The library part of ``tools/analysis/benchmark.py``.

* :class:`ReferenceLoop`: the baseline, the straightforward PyTorch loop of
  the paper's reference implementation (same open_clip model, same math):
  per step it encodes the images, the batch captions tokenised to the full
  77-token context and ALL class prompts (tokenised once, at start, to 77
  tokens), computes the Balanced Asymmetric Loss on
  ``logit_scale * cos(image, prompt)`` (a direct transcription of its six
  steps, :func:`reference_bal`) plus CLIP's contrastive loss on
  (image, caption) with ``F.cross_entropy``, and steps a plain
  ``torch.optim.AdamW``. Its evaluation runs the same forward per batch
  (images, captions, all prompts) under ``torch.no_grad()`` and keeps the
  logits.
* :func:`write_standin_dataset`: LMPT-format list files and generated JPEGs
  of a realistic size, for the real data pipeline.
* Peak-memory probes of the current process (``/proc/self/status``).
* :func:`count_flops`: ``torch.utils.flop_counter`` that also counts
  attention on the CPU.
"""
import os
import os.path as osp
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    'VOC_CLASSES', 'COCO_CLASSES', 'class_names', 'read_split_labels',
    'write_standin_dataset', 'reference_bal', 'reference_contrastive',
    'ReferenceLoop', 'RefBatch', 'to_ref_batch', 'proc_status_kib',
    'reset_peak_rss', 'count_flops'
]

VOC_CLASSES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
    'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')

COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
    'truck', 'boat', 'traffic light', 'fire hydrant', 'stop sign',
    'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag',
    'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot',
    'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush')

#: num_classes -> (name, labels file, train file) under the shared data dir
_SPLITS = {
    20: ('VOC-MLT', 'voc_mlt/longtail2012/voc_labels.txt',
         'voc_mlt/longtail2012/voc_lt_train.txt'),
    80: ('COCO-MLT', 'coco_mlt/longtail2017/coco_labels.txt',
         'coco_mlt/longtail2017/coco_lt_train.txt'),
}


def class_names(num_classes: int,
                data_dir: Optional[str] = None) -> Tuple[str, ...]:
    """The 20 VOC or 80 COCO class names.

    Read from ``data_dir``'s labels file (e.g. ``../shared/data``) when it
    is there, else the built-in lists (the same names).
    """
    if num_classes not in _SPLITS:
        raise ValueError(f'num_classes must be 20 (VOC) or 80 (COCO), got '
                         f'{num_classes}')
    if data_dir:
        path = osp.join(data_dir, _SPLITS[num_classes][1])
        if osp.isfile(path):
            from lmclip_mm.datasets.mlt_format import parse_labels_file
            names = parse_labels_file(path)
            if len(names) == num_classes:
                return tuple(names)
    return VOC_CLASSES if num_classes == 20 else COCO_CLASSES


def read_split_labels(num_classes: int,
                      data_dir: Optional[str] = None
                      ) -> Optional[List[List[int]]]:
    """The label lists of the real VOC-MLT / COCO-MLT train split, or None
    when ``data_dir`` does not hold it."""
    if not data_dir:
        return None
    path = osp.join(data_dir, _SPLITS[num_classes][2])
    if not osp.isfile(path):
        return None
    from lmclip_mm.datasets.mlt_format import parse_split_file
    return [list(r.labels) for r in parse_split_file(path, num_classes)]


def _synthetic_labels(num_images: int, num_classes: int,
                      rng: np.random.Generator) -> List[List[int]]:
    # Long-tailed class frequencies, 1-3 labels per image.
    p = 0.97**np.arange(num_classes)
    p = p / p.sum()
    out = []
    for _ in range(num_images):
        k = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        out.append(sorted(int(c) for c in rng.choice(
            num_classes, size=k, replace=False, p=p)))
    return out


def _standin_image(rng: np.random.Generator, width: int,
                   height: int) -> np.ndarray:
    """A photo-like RGB image: smooth colour field, shapes, sensor noise."""
    from PIL import Image, ImageDraw
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(low, 'RGB').resize((width, height),
                                             Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    pixels = np.asarray(img, dtype=np.float32)
    pixels += rng.normal(0, 6, pixels.shape).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_standin_dataset(
        root: str,
        classes: Sequence[str],
        num_images: int,
        jpeg_size: Tuple[int, int] = (500, 375),
        label_lists: Optional[Sequence[Sequence[int]]] = None,
        seed: int = 0,
        prefix: str = 'bench') -> Dict[str, str]:
    """Write an LMPT-format dataset of generated JPEGs into ``root``.

    ``num_images`` images (``jpeg_size`` = width, height; JPEG quality 90)
    with the labels of ``label_lists`` (e.g. the real train split; the
    first images are chosen so that every class occurs at least once,
    then the rest in order) or, without it, synthetic long-tailed labels.
    The test split lists the same images. Returns the dataset arguments
    (``labels_file``, ``train_file``, ``test_file``, ``captions_file``),
    relative to ``root``.
    """
    from PIL import Image
    num_classes = len(classes)
    rng = np.random.default_rng(seed)
    if label_lists is None:
        label_lists = _synthetic_labels(max(num_images, 4 * num_classes),
                                        num_classes, rng)
    # One image per class first (so that every class has a train count),
    # then the remaining images in their order.
    chosen, seen = [], set()
    for i, labels in enumerate(label_lists):
        if set(labels) - seen:
            chosen.append(i)
            seen.update(labels)
        if len(seen) == num_classes:
            break
    for c in sorted(set(range(num_classes)) - seen):  # still missing
        label_lists = list(label_lists) + [[c]]
        chosen.append(len(label_lists) - 1)
    rest = [i for i in range(len(label_lists)) if i not in set(chosen)]
    chosen = (chosen + rest)[:max(num_images, len(chosen))]
    records = [list(label_lists[i]) for i in chosen]
    if len(records) < num_images:  # cycle the labels
        records += [records[i % len(records)]
                    for i in range(num_images - len(records))]

    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    files = dict(
        labels_file=f'{prefix}_labels.txt',
        train_file=f'{prefix}_train.txt',
        test_file=f'{prefix}_test.txt',
        captions_file=f'{prefix}_captions.txt')
    with open(osp.join(root, files['labels_file']), 'w') as f:
        f.writelines(f'{name} {i}\n' for i, name in enumerate(classes))
    lines, captions = [], []
    for i, labels in enumerate(records):
        rel = f'images/{i:06d}.jpg'
        path = osp.join(root, rel)
        if not osp.exists(path):
            Image.fromarray(_standin_image(rng, *jpeg_size)).save(
                path, quality=90)
        lines.append(rel + ' ' + ' '.join(map(str, labels)) + '\n')
        captions.append(f'{rel} a photo of ' +
                        ', '.join(classes[c] for c in labels) + '.\n')
    for key in ('train_file', 'test_file'):
        with open(osp.join(root, files[key]), 'w') as f:
            f.writelines(lines)
    with open(osp.join(root, files['captions_file']), 'w') as f:
        f.writelines(captions)
    return files


# ---------------------------------------------------------------------------
# The reference loop


def reference_bal(x: torch.Tensor,
                  y: torch.Tensor,
                  gamma_pos: float,
                  gamma_neg: float,
                  clip: Optional[float],
                  eps: float,
                  label_smoothing: float,
                  class_weight: Optional[torch.Tensor],
                  loss_weight: float) -> torch.Tensor:
    """The Balanced Asymmetric Loss, transcribed step by step."""
    num_classes = x.size(1)
    # 1. smoothed targets and anti-targets
    t = y * (1 - label_smoothing) + label_smoothing / num_classes
    a = 1 - y
    # 2. scale by the batch maximum (max|x| if it is <= 0, 1 if all zero)
    x_max = x.max()
    if x_max <= 0:
        x_max = x.abs().max()
        if x_max == 0:
            x_max = torch.ones_like(x_max)
    z = x / x_max
    # 3. probabilities and clipped negative probabilities
    p = torch.sigmoid(z)
    q = 1 - p
    if clip is not None and clip > 0:
        q = torch.clamp(q + clip, max=1)
    # 4. weighted log-likelihoods
    w = 1 + class_weight if class_weight is not None else 1
    loss = t * torch.log(torch.clamp(p, min=eps)) * w + \
        a * torch.log(torch.clamp(q, min=eps))
    # 5. asymmetric focusing
    if gamma_pos > 0 or gamma_neg > 0:
        base = torch.clamp(1 - p * t - q * a, min=0)
        loss = loss * torch.pow(base, gamma_pos * t + gamma_neg * a)
    # 6. mean over all entries
    return -loss_weight * loss.mean()


def reference_contrastive(image: torch.Tensor, text: torch.Tensor,
                          scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE on normalised features (as open_clip's
    ``ClipLoss``)."""
    logits_per_image = scale * image @ text.T
    logits_per_text = scale * text @ image.T
    labels = torch.arange(image.size(0), device=image.device)
    return (F.cross_entropy(logits_per_image, labels) +
            F.cross_entropy(logits_per_text, labels)) / 2


class RefBatch:
    """A batch as the reference loop's dataset gives it: BGR uint8 images
    (N, 3, H, W), multi-hot float targets (N, C), caption strings."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor,
                 captions: List[str]):
        self.images = images
        self.targets = targets
        self.captions = captions

    def __len__(self):
        return self.images.size(0)


def to_ref_batch(batch: dict, num_classes: int) -> RefBatch:
    """Convert a collated mmpretrain batch (``inputs``, ``data_samples``)."""
    images = batch['inputs']
    if isinstance(images, (list, tuple)):
        images = torch.stack(list(images))
    targets = torch.zeros(len(batch['data_samples']), num_classes)
    for i, ds in enumerate(batch['data_samples']):
        targets[i, ds.gt_label.long()] = 1
    return RefBatch(images, targets,
                    [ds.caption for ds in batch['data_samples']])


class ReferenceLoop:
    """The paper's training / evaluation loop, written plainly.

    Args:
        clip: an open_clip CLIP model (on ``device``).
        tokenizer: its open_clip tokenizer (77-token context).
        classes: class names; the prompts are tokenised once, here.
        prompt_template: e.g. ``'a photo of a {}'``.
        loss (dict): the BAL settings (``gamma_pos``, ``gamma_neg``,
            ``clip``, ``eps``, ``label_smoothing``, ``loss_weight``).
        class_weight: ``w_c`` (C,) or None.
        contrastive_weight: multiplier of the contrastive loss.
        optimizer (dict): ``torch.optim.AdamW`` arguments.
        mean, std: normalisation of the RGB 0-255 images.
        amp_dtype: None (float32), ``torch.bfloat16`` or ``torch.float16``
            (autocast; float16 on CUDA also gets a ``GradScaler``).
        logit_scale_max: clamp of ``exp(logit_scale)`` (None: no clamp).
    """

    def __init__(self,
                 clip: torch.nn.Module,
                 tokenizer,
                 classes: Sequence[str],
                 prompt_template: str,
                 loss: dict,
                 class_weight: Optional[torch.Tensor],
                 contrastive_weight: float,
                 optimizer: dict,
                 mean: Sequence[float],
                 std: Sequence[float],
                 amp_dtype: Optional[torch.dtype] = None,
                 logit_scale_max: Optional[float] = None):
        self.clip = clip
        self.device = clip.logit_scale.device
        self.tokenizer = tokenizer
        self.prompt_tokens = tokenizer(
            [prompt_template.format(c) for c in classes]).to(self.device)
        self.loss_cfg = dict(
            gamma_pos=float(loss.get('gamma_pos', 0.0)),
            gamma_neg=float(loss.get('gamma_neg', 4.0)),
            clip=loss.get('clip', 0.05),
            eps=float(loss.get('eps', 1e-8)),
            label_smoothing=float(loss.get('label_smoothing', 0.0)),
            loss_weight=float(loss.get('loss_weight', 1.0)))
        self.class_weight = (None if class_weight is None else
                             class_weight.to(self.device, torch.float32))
        self.contrastive_weight = contrastive_weight
        self.optimizer = torch.optim.AdamW(clip.parameters(), **optimizer)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.amp_dtype = amp_dtype
        self.logit_scale_max = logit_scale_max
        self.scaler = None
        if amp_dtype == torch.float16 and self.device.type == 'cuda':
            self.scaler = torch.amp.GradScaler('cuda')

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device)[:, [2, 1, 0]].float()  # BGR -> RGB
        return (x - self.mean) / self.std

    def scale(self) -> torch.Tensor:
        s = self.clip.logit_scale.exp()
        if self.logit_scale_max is not None:
            s = s.clamp(max=self.logit_scale_max)
        return s

    def forward(self, batch: RefBatch):
        """Image, caption and prompt features of a batch, and the scale."""
        images = self.preprocess(batch.images)
        captions = self.tokenizer(batch.captions).to(self.device)
        image = self.clip.encode_image(images)
        caption = self.clip.encode_text(captions)
        prompts = self.clip.encode_text(self.prompt_tokens)
        return image, caption, prompts, self.scale()

    def loss(self, batch: RefBatch) -> Tuple[torch.Tensor, dict]:
        with self.autocast():
            image, caption, prompts, scale = self.forward(batch)
        image = F.normalize(image.float(), dim=-1)
        caption = F.normalize(caption.float(), dim=-1)
        prompts = F.normalize(prompts.float(), dim=-1)
        logits = scale * image @ prompts.T
        targets = batch.targets.to(self.device)
        bal = reference_bal(logits, targets, class_weight=self.class_weight,
                            **self.loss_cfg)
        contrastive = self.contrastive_weight * reference_contrastive(
            image, caption, scale)
        return bal + contrastive, dict(
            loss_bal=bal.detach(), loss_contrastive=contrastive.detach())

    def train_step(self, batch: RefBatch) -> float:
        loss, _ = self.loss(batch)
        self.optimizer.zero_grad()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.item()

    def eval_step(self, batch: RefBatch) -> torch.Tensor:
        """(N, C) logits; the full forward of a training step."""
        with torch.no_grad(), self.autocast():
            image, caption, prompts, scale = self.forward(batch)
            image = F.normalize(image, dim=-1)
            prompts = F.normalize(prompts, dim=-1)
            logits = scale * image @ prompts.T
        return logits.float().cpu()


# ---------------------------------------------------------------------------
# Memory


def proc_status_kib(key: str) -> Optional[int]:
    """A ``/proc/self/status`` value in KiB (``VmRSS``, ``VmHWM``), or
    None where there is no /proc."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS
    (Linux: ``echo 5 > /proc/self/clear_refs``); False where unsupported."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# FLOPs


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None,
                **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape,
                         *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_backward_flop_count
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                    value_shape)


def count_flops(fn) -> int:
    """FLOPs of ``fn()``: matmuls, convolutions and attention, as counted by
    ``torch.utils.flop_counter.FlopCounterMode``, with two gaps closed.

    * The CPU attention kernel (``_scaled_dot_product_flash_attention_for_
      cpu`` and its backward) has no formula there: it gets the one of the
      GPU kernels.
    * ``nn.MultiheadAttention``'s inference fast path is one fused op whose
      projections the counter cannot see: it is switched off while counting
      (the general path computes the same attention).
    """
    from torch.utils.flop_counter import FlopCounterMode
    aten = torch.ops.aten
    mapping = {}
    for name, formula in (
            ('_scaled_dot_product_flash_attention_for_cpu', _sdpa_flops),
            ('_scaled_dot_product_flash_attention_for_cpu_backward',
             _sdpa_backward_flops)):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = formula
    mha = getattr(torch.backends, 'mha', None)
    switch = mha is not None and hasattr(mha, 'set_fastpath_enabled')
    previous = mha.get_fastpath_enabled() if switch else None
    if switch:
        mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=mapping) as c:
            fn()
    finally:
        if switch:
            mha.set_fastpath_enabled(previous)
    return c.get_total_flops()
