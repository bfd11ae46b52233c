# Copyright (c) lmclip_mm authors.
"""Data transforms; importing this package registers them in mmpretrain's
``TRANSFORMS``."""
from .load_resized_image import LoadResizedImage

__all__ = ['LoadResizedImage']
