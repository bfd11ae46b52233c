# Copyright (c) lmclip_mm authors.
from .dataset_meta_hook import DatasetMetaHook

__all__ = ['DatasetMetaHook']
