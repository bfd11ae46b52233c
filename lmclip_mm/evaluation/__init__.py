# Copyright (c) lmclip_mm authors.
from .metrics import *  # noqa: F401,F403
from .metrics import __all__  # noqa: F401
from .thresholds import fit_class_thresholds  # noqa: F401

__all__ = list(__all__) + ['fit_class_thresholds']
