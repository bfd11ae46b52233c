# Copyright (c) lmclip_mm authors.
"""The mid-epoch resume position shared by lmclip_mm's samplers."""
from typing import Dict, Optional


class ResumableSamplerMixin:
    """Skip the already-consumed start of one epoch, for exact resume.

    :meth:`set_start_index` (or :meth:`load_state_dict`) makes the next pass
    over one epoch skip the first ``n`` indices of this rank's share, so that
    it yields exactly the indices an interrupted pass had not consumed yet
    (used by :class:`~lmclip_mm.engine.hooks.ExactResumeHook`). The start
    applies to that epoch only: ``set_epoch`` of the same epoch (mmengine's
    ``DistSamplerSeedHook``) keeps it, ``set_epoch`` of another epoch clears
    it, and it is used by one pass only (a second pass over the same epoch
    is complete again). While it applies, ``len()`` is the number of
    indices left.

    The sampler class sets ``epoch``, ``seed`` and ``num_samples`` (this
    rank's indices per epoch), calls :meth:`_init_resume` in ``__init__``,
    :meth:`_resume_set_epoch` in ``set_epoch`` and slices its indices with
    :meth:`_take_start` in ``__iter__``.
    """

    def _init_resume(self) -> None:
        self._start_epoch: Optional[int] = None
        self._start_index = 0
        self._start_used = False

    def __len__(self) -> int:
        return self.num_samples - self.start_index

    def _resume_set_epoch(self, epoch: int) -> None:
        if self._start_epoch is not None and epoch != self._start_epoch:
            self._clear_start()

    @property
    def start_index(self) -> int:
        """The start of the current epoch's pass (0 unless resumed)."""
        if self._start_epoch is not None and self._start_epoch == self.epoch:
            return self._start_index
        return 0

    def set_start_index(self, start_index: int,
                        epoch: Optional[int] = None) -> None:
        """Skip the first ``start_index`` indices of this rank's share of
        ``epoch`` (default: the current epoch) in the next pass over it.

        ``epoch`` also becomes the current epoch. ``start_index`` may equal
        ``len()`` of a full epoch (nothing left to yield).
        """
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
        """``epoch``, ``start_index`` (as set, not the progress of a pass:
        a dataloader's workers read ahead of training) and ``seed``."""
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
