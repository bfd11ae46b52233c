# Copyright (c) lmclip_mm authors.
"""The hooks through which a trial reports each validation to its tuner.

Importing this package registers them in mmpretrain's ``HOOKS``;
``tools/tune.py`` adds it to every trial config's ``custom_imports``
(``import lmclip_mm`` does not import it: the library knows nothing of
Optuna or Ray).
"""
from .optuna_pruning_hook import OptunaPruningHook
from .ray_tune_report_hook import RayTuneReportHook
from .trial_report_hook import TrialReportHook, resolve_metric, trial_record

__all__ = ['TrialReportHook', 'OptunaPruningHook', 'RayTuneReportHook',
           'resolve_metric', 'trial_record']
