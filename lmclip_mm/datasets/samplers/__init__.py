# Copyright (c) lmclip_mm authors.
"""Data samplers; importing this package registers them in mmpretrain's
``DATA_SAMPLERS``."""
from .class_aware_repeat_sampler import ClassAwareRepeatSampler

__all__ = ['ClassAwareRepeatSampler']
