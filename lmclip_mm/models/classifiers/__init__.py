# Copyright (c) lmclip_mm authors.
from .lmclip_classifier import LMCLIPClassifier

__all__ = ['LMCLIPClassifier']
