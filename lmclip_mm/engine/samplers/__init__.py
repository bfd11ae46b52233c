# Copyright (c) lmclip_mm authors.
"""Samplers for the training engine; importing this package registers them
in mmpretrain's ``DATA_SAMPLERS``."""
from .resumable_default_sampler import ResumableDefaultSampler

__all__ = ['ResumableDefaultSampler']
