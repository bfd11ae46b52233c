# Copyright (c) lmclip_mm authors.
"""Hooks a config names; importing this package registers them in
mmpretrain's ``HOOKS``. (The tuner's reporting hooks belong to
``tools/tune.py``: :mod:`lmclip_tools.tune.hooks`.)"""
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .best_checkpoint_test_hook import BestCheckpointTestHook
from .dataset_meta_hook import DatasetMetaHook
from .exact_resume_hook import ExactResumeHook
from .train_map_hook import TrainMAPHook

__all__ = ['DatasetMetaHook', 'AtomicCheckpointHook', 'ExactResumeHook',
           'BestCheckpointTestHook', 'TrainMAPHook']
