# Copyright (c) lmclip_mm authors.
"""mmengine's DefaultSampler with a mid-epoch resume position."""
from typing import Iterator

from mmengine.dataset import DefaultSampler
from mmpretrain.registry import DATA_SAMPLERS

from .resumable import ResumableSamplerMixin


@DATA_SAMPLERS.register_module()
class ResumableDefaultSampler(ResumableSamplerMixin, DefaultSampler):
    """:class:`~mmengine.dataset.DefaultSampler` that can resume mid-epoch.

    Yields exactly what ``DefaultSampler`` yields (same arguments, same
    order for a given ``seed`` and epoch), plus the resume API of
    :class:`~lmclip_mm.datasets.samplers.ClassAwareRepeatSampler`:
    :meth:`set_start_index` / :meth:`state_dict` / :meth:`load_state_dict`
    make the next pass over one epoch skip the first ``n`` indices of this
    rank's share. The start applies to that epoch only (``set_epoch`` of
    the same epoch keeps it, of another clears it) and to one pass; while
    it applies, ``len()`` is the number of indices left. Used by
    :class:`~lmclip_mm.engine.hooks.ExactResumeHook`.

    Config::

        train_dataloader = dict(
            sampler=dict(type='ResumableDefaultSampler', shuffle=True), ...)
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_resume()

    def __iter__(self) -> Iterator[int]:
        start = self._take_start()
        indices = list(super().__iter__())
        return iter(indices[start:])

    def set_epoch(self, epoch: int) -> None:
        self._resume_set_epoch(epoch)
        super().set_epoch(epoch)
