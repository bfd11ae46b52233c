# Copyright (c) lmclip_mm authors.
"""Optimizer wrappers; importing this package registers them in
mmpretrain's ``OPTIM_WRAPPERS``."""
from .safe_amp_optim_wrapper import SafeAmpOptimWrapper
from .safe_optim_wrapper import SafeOptimWrapper, TrainingDivergedError

__all__ = ['SafeOptimWrapper', 'SafeAmpOptimWrapper', 'TrainingDivergedError']
