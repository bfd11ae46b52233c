# Copyright (c) lmclip_mm authors.
from .dataset_meta_hook import DatasetMetaHook
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .exact_resume_hook import ExactResumeHook

__all__ = ['DatasetMetaHook', 'AtomicCheckpointHook', 'ExactResumeHook']
