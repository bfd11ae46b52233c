# Copyright (c) lmclip_mm authors.
"""Report each validation of a training run to an Optuna trial; prune."""
from typing import Dict, Optional

from mmpretrain.registry import HOOKS

from ..optuna_utils import build_pruner, sqlite_engine_kwargs
from .trial_report_hook import TrialReportHook


@HOOKS.register_module()
class OptunaPruningHook(TrialReportHook):
    """:class:`TrialReportHook` that reports to a trial of an Optuna study
    kept in an RDB storage (SQLite, PostgreSQL, MySQL) and stops the run
    when the study's pruner prunes the trial.

    ``tools/tune.py`` adds it to each trial's config; the training runs in
    its own process and reaches the study through the storage::

        custom_hooks = [..., dict(type='OptunaPruningHook',
            storage='sqlite:////path/study.db', study_name='toy',
            trial_id=3, metric='mAP_tail',
            pruner=dict(type='SuccessiveHalvingPruner', min_resource=5,
                        reduction_factor=2))]

    Each validation (step = epoch) is passed to ``trial.report``; when
    ``trial.should_prune()`` says so, training ends after this epoch and the
    trial report file says ``stopped_epoch``; the tuner then marks the trial
    PRUNED. The last epoch is never pruned. ``pruner`` must be the study's
    pruner (the pruner is not kept in the storage).
    """

    def __init__(self, storage: str, study_name: str, trial_id: int,
                 pruner: Optional[Dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.storage = storage
        self.study_name = study_name
        self.trial_id = trial_id
        self.pruner = pruner
        self._trial = None

    def _get_trial(self):
        if self._trial is None:
            import optuna
            storage = optuna.storages.RDBStorage(
                self.storage, engine_kwargs=sqlite_engine_kwargs(self.storage))
            study = optuna.load_study(
                study_name=self.study_name, storage=storage,
                pruner=build_pruner(self.pruner))
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def report(self, runner, epoch: int, value: float, metrics: Dict) -> bool:
        trial = self._get_trial()
        trial.report(value, epoch)
        return trial.should_prune()
