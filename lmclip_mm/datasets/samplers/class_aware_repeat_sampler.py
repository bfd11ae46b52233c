"""LM-CLIP's class-occurrence sampler."""
import math
from typing import Iterator, List, Optional, Sized

import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmpretrain.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from ..class_stats import repeat_rates
from .resumable import ResumableSamplerMixin


@DATA_SAMPLERS.register_module()
class ClassAwareRepeatSampler(ResumableSamplerMixin, Sampler):
    """Draw images with replacement in proportion to their class rarity.

    With ``N`` images in the dataset, ``n_c`` of them containing class ``c``
    and power ``s``, the raw class weight is ``r_c = N / n_c`` and image
    ``i`` is drawn with probability proportional to
    ``(sum_{c in y_i} r_c) ** s`` (see
    :func:`lmclip_mm.datasets.class_stats.repeat_rates`). ``s = 0``
    draws uniformly (with replacement); an image without any class is never
    drawn.

    ``N`` and ``n_c`` are counted over the dataset given (the images it
    draws, i.e. the images trained on), through its ``get_cat_ids(idx)``.
    For a train split of
    :class:`~lmclip_mm.datasets.LongTailMultiLabelDataset` they equal
    ``metainfo['num_train_images']`` / ``metainfo['class_counts']``, from
    which the loss class weights are computed, in both protocols: with
    ``holdout_val=True`` both count the train list without the val images.
    Classes that occur in no image of the dataset play no part.

    Each epoch makes one global draw of ``num_samples_per_rank *
    world_size`` indices from a generator seeded with ``seed + epoch``;
    rank ``r`` takes ``draw[r::world_size]``. The epoch is therefore the same
    on every run and on resume (the runner calls :meth:`set_epoch`).

    Resuming in the middle of an epoch: :meth:`set_start_index` (or
    :meth:`load_state_dict`) makes the next pass over one epoch skip the
    first ``n`` indices of this rank's share, so that it yields exactly the
    indices an interrupted pass had not consumed yet (used by
    :class:`~lmclip_mm.engine.hooks.ExactResumeHook`). The start applies to
    that epoch only: ``set_epoch`` of the same epoch (mmengine's
    ``DistSamplerSeedHook``) keeps it, ``set_epoch`` of another epoch clears
    it, and it is used by one pass only (a second pass over the same epoch
    is complete again). While it applies, ``len()`` is the number of
    indices left.

    Config::

        train_dataloader = dict(
            sampler=dict(type='ClassAwareRepeatSampler', power=s),
            ...)

    Args:
        dataset (Sized): a dataset with ``get_cat_ids(idx)``.
        power (float): the power ``s >= 0``. Defaults to 1.
        seed (int, optional): identical across ranks; None draws one with
            :func:`mmengine.dist.sync_random_seed`.
        num_samples (int, optional): number of draws per epoch over all
            ranks. Defaults to ``len(dataset)``. Each rank yields
            ``ceil(num_samples / world_size)`` indices.
    """

    def __init__(self,
                 dataset: Sized,
                 power: float = 1.0,
                 seed: Optional[int] = None,
                 num_samples: Optional[int] = None) -> None:
        if isinstance(power, bool) or not isinstance(power, (int, float)) \
                or not math.isfinite(power) or power < 0:
            raise ValueError(
                f'ClassAwareRepeatSampler: power must be a finite number >= '
                f'0, got {power!r}')
        if num_samples is not None and (isinstance(num_samples, bool)
                                        or not isinstance(num_samples, int)
                                        or num_samples <= 0):
            raise ValueError('ClassAwareRepeatSampler: num_samples must be a '
                             f'positive int or None, got {num_samples!r}')
        get_cat_ids = getattr(dataset, 'get_cat_ids', None)
        if not callable(get_cat_ids):
            raise TypeError(
                f'ClassAwareRepeatSampler needs a dataset with '
                f'get_cat_ids(idx); {type(dataset).__name__} has none')
        if len(dataset) == 0:
            raise ValueError('ClassAwareRepeatSampler: the dataset is empty')

        rank, world_size = get_dist_info()
        self.rank = rank
        self.world_size = world_size
        self.dataset = dataset
        self.power = float(power)
        if seed is None:
            seed = sync_random_seed()
        self.seed = seed
        self.epoch = 0
        # mid-epoch resume: (epoch, start) for one pass, see set_start_index
        self._init_resume()

        self.total_samples = len(dataset) if num_samples is None \
            else num_samples
        self.num_samples = math.ceil(self.total_samples / world_size)
        self.total_size = self.num_samples * world_size

        try:
            rates = repeat_rates(self._cat_ids(dataset), self.power)
        except ValueError as e:
            raise ValueError(f'ClassAwareRepeatSampler: {e}') from None
        #: the classes present in the dataset, sorted
        self.classes: List[int] = rates.classes
        #: ``n_c`` for the classes present, in the order of ``self.classes``
        self.class_counts: List[int] = rates.class_counts
        self.weights = torch.as_tensor(rates.weights, dtype=torch.float64)

    @staticmethod
    def _cat_ids(dataset) -> List[List[int]]:
        cat_ids = []
        for idx in range(len(dataset)):
            try:
                ids = dataset.get_cat_ids(idx)
            except NotImplementedError:
                raise TypeError(
                    'ClassAwareRepeatSampler needs a dataset with '
                    f'get_cat_ids(idx); {type(dataset).__name__} does not '
                    'implement it') from None
            cat_ids.append([int(c) for c in ids])
        return cat_ids

    def global_draw(self, epoch: Optional[int] = None) -> List[int]:
        """The indices of all ranks for ``epoch`` (default: current)."""
        epoch = self.epoch if epoch is None else epoch
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        return torch.multinomial(
            self.weights, self.total_size, replacement=True,
            generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        start = self._take_start()
        draw = self.global_draw()
        indices = draw[self.rank:self.total_size:self.world_size]
        return iter(indices[start:])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: the draw depends on ``seed + epoch``.

        A start index set for another epoch is cleared.
        """
        self._resume_set_epoch(epoch)
        self.epoch = epoch
