# Copyright (c) lmclip_mm authors.
from .lmclip_head import LMCLIPHead

__all__ = ['LMCLIPHead']
