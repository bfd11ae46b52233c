# Copyright (c) lmclip_mm authors.
"""mmengine's DefaultSampler with a mid-epoch resume position."""
from typing import Dict, Iterator, Optional

from mmengine.dataset import DefaultSampler
from mmpretrain.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class ResumableDefaultSampler(DefaultSampler):
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
        self._start_epoch: Optional[int] = None
        self._start_index = 0
        self._start_used = False

    def __iter__(self) -> Iterator[int]:
        start = self._take_start()
        indices = list(super().__iter__())
        return iter(indices[start:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index

    def set_epoch(self, epoch: int) -> None:
        if self._start_epoch is not None and epoch != self._start_epoch:
            self._clear_start()
        super().set_epoch(epoch)

    @property
    def start_index(self) -> int:
        """The start of the current epoch's pass (0 unless resumed)."""
        if self._start_epoch is not None and self._start_epoch == self.epoch:
            return self._start_index
        return 0

    def set_start_index(self, start_index: int,
                        epoch: Optional[int] = None) -> None:
        """Skip the first ``start_index`` indices of this rank's share of
        ``epoch`` (default: the current epoch) in the next pass over it;
        ``epoch`` also becomes the current epoch."""
        if epoch is None:
            epoch = self.epoch
        if isinstance(start_index, bool) or not isinstance(
                start_index, int) or not 0 <= start_index <= self.num_samples:
            raise ValueError(
                f'{type(self).__name__}: start_index must be an int in '
                f'[0, {self.num_samples}], got {start_index!r}')
        self.epoch = epoch
        self._start_epoch = epoch
        self._start_index = start_index
        self._start_used = False

    def state_dict(self) -> Dict[str, int]:
        """``epoch``, ``start_index`` (as set) and ``seed``."""
        return dict(
            epoch=self.epoch, start_index=self.start_index, seed=self.seed)

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Set the epoch and its start index from :meth:`state_dict`."""
        if state.get('seed', self.seed) != self.seed:
            raise ValueError(
                f'{type(self).__name__}: the state was saved with seed '
                f'{state["seed"]}, this sampler has seed {self.seed}')
        self.set_start_index(int(state.get('start_index', 0)),
                             int(state['epoch']))

    def _clear_start(self) -> None:
        self._start_epoch = None
        self._start_index = 0
        self._start_used = False

    def _take_start(self) -> int:
        if self._start_epoch is None or self._start_epoch != self.epoch:
            return 0
        if self._start_used:  # a second pass over the resumed epoch
            self._clear_start()
            return 0
        self._start_used = True
        return self._start_index
