# Copyright (c) lmclip_mm authors.
"""Datasets and samplers; importing this package registers them in
mmpretrain's ``DATASETS`` / ``DATA_SAMPLERS``."""
from .class_stats import class_rarity, class_weights, sample_weights
from .coco_mlt import COCOMLT
from .long_tail_multi_label_dataset import LongTailMultiLabelDataset
from .mlt_format import DatasetFileNotFoundError, DatasetFormatError
from .samplers import ClassAwareRepeatSampler
from .transforms import LoadResizedImage
from .toy_mlt import ToyMLT, ensure_toy_mlt, generate_toy_mlt
from .voc_mlt import VOCMLT

__all__ = [
    'LongTailMultiLabelDataset', 'VOCMLT', 'COCOMLT', 'ToyMLT',
    'ClassAwareRepeatSampler', 'LoadResizedImage', 'DatasetFormatError',
    'DatasetFileNotFoundError', 'generate_toy_mlt', 'ensure_toy_mlt',
    'class_rarity', 'class_weights', 'sample_weights'
]
