# Copyright (c) lmclip_mm authors.
from .dataset_meta_hook import DatasetMetaHook
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .exact_resume_hook import ExactResumeHook
from .test_best_checkpoint_hook import TestBestCheckpointHook
from .train_map_hook import TrainMAPHook
from .trial_report_hook import TrialReportHook
from .optuna_pruning_hook import OptunaPruningHook
from .ray_tune_report_hook import RayTuneReportHook

__all__ = ['DatasetMetaHook', 'AtomicCheckpointHook', 'ExactResumeHook',
           'TrialReportHook', 'OptunaPruningHook', 'RayTuneReportHook',
           'TestBestCheckpointHook', 'TrainMAPHook']
