# Copyright (c) lmclip_mm authors.
"""Data samplers; importing this package registers them in mmpretrain's
``DATA_SAMPLERS``. Both resume mid-epoch exactly (:mod:`.resumable`)."""
from .class_aware_repeat_sampler import ClassAwareRepeatSampler
from .resumable_default_sampler import ResumableDefaultSampler

__all__ = ['ClassAwareRepeatSampler', 'ResumableDefaultSampler']
