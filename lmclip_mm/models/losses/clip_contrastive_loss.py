"""CLIP's image-caption contrastive (InfoNCE) loss, DDP-aware."""
import hashlib
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import get_dist_info
from mmpretrain.registry import MODELS
from open_clip.loss import gather_features

__all__ = ['CLIPContrastiveLoss', 'caption_ids']


def caption_ids(captions: Sequence[str], device=None) -> torch.Tensor:
    """Stable 64-bit ids of caption strings (equal text <=> equal id).

    A hash (not a per-batch vocabulary) so that ids agree across processes
    without exchanging the strings themselves.
    """
    ids = []
    for caption in captions:
        if not isinstance(caption, str):
            raise TypeError(f'captions must be str, got {type(caption)}')
        digest = hashlib.blake2b(caption.encode('utf-8'), digest_size=8)
        ids.append(int.from_bytes(digest.digest(), 'little', signed=True))
    return torch.tensor(ids, dtype=torch.int64, device=device)


def _all_gather_sizes(n: int, world_size: int, device) -> List[int]:
    size = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _pad_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.size(0) == n:
        return x
    return torch.cat([x, x.new_zeros((n - x.size(0), ) + x.shape[1:])])


def _unpad(x: torch.Tensor, sizes: List[int], max_n: int) -> torch.Tensor:
    if all(s == max_n for s in sizes):
        return x
    return torch.cat(
        [x[i * max_n:i * max_n + s] for i, s in enumerate(sizes)])


@MODELS.register_module()
class CLIPContrastiveLoss(nn.Module):
    """Symmetric image-caption InfoNCE loss of CLIP.

    With ``I``, ``T`` the L2-normalised image and caption embeddings of the
    (global) batch and ``s`` the logit scale::

        loss = loss_weight * (CE(s I T^T, arange) + CE(s T I^T, arange)) / 2

    ``logit_scale`` is the multiplier ``s`` itself, i.e. already
    exponentiated (``clip_model.logit_scale.exp()``), as in
    :class:`open_clip.loss.ClipLoss`.

    **Distributed training.** Under ``torch.distributed`` the features of all
    ranks are gathered (open_clip's :func:`~open_clip.loss.gather_features`)
    so the loss covers the global batch. With ``gather_with_grad=True`` (the
    default), for W ranks of b samples each:

    * ``local_loss=False`` (default): every rank's loss equals the loss of
      one process on the W * b samples;
      ``local_loss=True``: each rank only computes its own b rows (cheaper,
      ``O(b W b)`` instead of ``O((W b)^2)``) and the mean of the ranks'
      losses equals the one-process loss;
    * in both cases the gradient w.r.t. a rank's own features is W times
      the one-process gradient for those samples (each rank back-propagates
      the loss through the all-gather, whose backward sums over ranks), so
      after DDP's gradient averaging the parameter gradients equal those of
      one process on the W * b samples.

    With ``gather_with_grad=False`` only the local features get gradients
    (1 x the one-process gradient with ``local_loss=False``): the
    DDP-averaged gradients of the towers are then 1/W of the one-process
    ones (the logit scale's, used whole by every rank, stays 1 x), and with
    ``local_loss=True`` they are not proportional to them at all.

    Ranks may hold different batch sizes (they are padded for the gather
    and unpadded after); with ``local_loss=True`` the mean of the ranks'
    losses then weighs the ranks equally, not the samples.

    Args:
        loss_weight (float): multiplier of the loss. Defaults to 1.
        gather_with_grad (bool): all-gather with gradient. Defaults to True.
        local_loss (bool): only compute the rows of the local samples
            (see above). Defaults to False.
        caption_positives (bool): treat every pair whose caption texts are
            identical as positive: the targets of a row are then uniform over
            the samples with the same caption (soft-target cross entropy).
            Defaults to False: only the diagonal is positive, as in CLIP and
            the LM-CLIP reference (pairs with equal captions are negatives).
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 gather_with_grad: bool = True,
                 local_loss: bool = False,
                 caption_positives: bool = False):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.gather_with_grad = bool(gather_with_grad)
        self.local_loss = bool(local_loss)
        self.caption_positives = bool(caption_positives)

    def _gather(self, image: torch.Tensor, text: torch.Tensor,
                ids: Optional[torch.Tensor], rank: int, world_size: int
                ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor],
                           int]:
        sizes = _all_gather_sizes(image.size(0), world_size, image.device)
        max_n = max(sizes)
        all_image, all_text = gather_features(
            _pad_rows(image, max_n),
            _pad_rows(text, max_n),
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
            rank=rank,
            world_size=world_size)
        all_image = _unpad(all_image, sizes, max_n)
        all_text = _unpad(all_text, sizes, max_n)
        all_ids = None
        if ids is not None:
            gathered = [torch.zeros_like(_pad_rows(ids, max_n))
                        for _ in range(world_size)]
            dist.all_gather(gathered, _pad_rows(ids, max_n))
            all_ids = _unpad(torch.cat(gathered), sizes, max_n)
        return all_image, all_text, all_ids, sum(sizes[:rank])

    def forward(self,
                image_features: torch.Tensor,
                text_features: torch.Tensor,
                logit_scale: torch.Tensor,
                captions: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            image_features (Tensor): (N, D) image embeddings (normalised
                here; already normalised ones are fine).
            text_features (Tensor): (N, D) embeddings of the N captions.
            logit_scale (Tensor | float): the scale ``s`` (exponentiated).
            captions (sequence of str, optional): the N caption texts; only
                needed with ``caption_positives=True``.
        """
        if image_features.ndim != 2 or \
                image_features.shape != text_features.shape:
            raise ValueError(
                'image_features and text_features must both be (N, D) with '
                f'the same shape, got {tuple(image_features.shape)} and '
                f'{tuple(text_features.shape)}')
        if image_features.size(0) == 0:
            raise ValueError('CLIPContrastiveLoss got an empty batch')
        if not isinstance(logit_scale, torch.Tensor):
            logit_scale = torch.tensor(
                float(logit_scale), device=image_features.device)
        if logit_scale.numel() != 1:
            raise ValueError('logit_scale must be a scalar, got shape '
                             f'{tuple(logit_scale.shape)}')
        ids = None
        if self.caption_positives:
            if captions is None or len(captions) != image_features.size(0):
                raise ValueError(
                    'caption_positives=True needs one caption per sample, '
                    f'got {None if captions is None else len(captions)} for '
                    f'{image_features.size(0)} samples')
            ids = caption_ids(captions, device=image_features.device)

        with torch.autocast(
                device_type=image_features.device.type, enabled=False):
            image = F.normalize(image_features.float(), dim=-1)
            text = F.normalize(text_features.float(), dim=-1)
            scale = logit_scale.float().reshape(())

            rank, world_size = get_dist_info()
            if world_size > 1:
                all_image, all_text, all_ids, offset = self._gather(
                    image, text, ids, rank, world_size)
            else:
                all_image, all_text, all_ids, offset = image, text, ids, 0

            if self.local_loss:
                logits_per_image = scale * image @ all_text.T
                logits_per_text = scale * text @ all_image.T
                row_ids = ids
            else:
                logits_per_image = scale * all_image @ all_text.T
                logits_per_text = logits_per_image.T
                offset, row_ids = 0, all_ids

            if self.caption_positives:
                same = (row_ids[:, None] == all_ids[None, :]).float()
                target = same / same.sum(dim=1, keepdim=True)
            else:
                target = torch.arange(
                    offset,
                    offset + logits_per_image.size(0),
                    device=logits_per_image.device)
            loss = (F.cross_entropy(logits_per_image, target) +
                    F.cross_entropy(logits_per_text, target)) / 2
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'loss_weight={self.loss_weight}, '
                f'gather_with_grad={self.gather_with_grad}, '
                f'local_loss={self.local_loss}, '
                f'caption_positives={self.caption_positives}')
