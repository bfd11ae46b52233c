# Copyright (c) lmclip_mm authors.
"""Report each validation of a training run to Ray Tune."""
import numbers
from typing import Dict

from mmpretrain.registry import HOOKS

from .trial_report_hook import TrialReportHook


@HOOKS.register_module()
class RayTuneReportHook(TrialReportHook):
    """:class:`TrialReportHook` that passes each validation to
    ``ray.tune.report`` (inside a Ray Tune trial): ``epoch``, the trial's
    value so far (see :class:`TrialReportHook`) under ``report_as``
    (default: ``metric``) and every validation metric with ``/`` replaced
    by ``_``. Ray's scheduler (e.g. ASHA with ``time_attr='epoch'``) stops
    the trial itself."""

    def __init__(self, report_as: str = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.report_as = report_as or self.metric

    def report(self, runner, epoch: int, value: float, metrics: Dict) -> bool:
        from ray import tune
        result = {k.replace('/', '_'): float(v) for k, v in metrics.items()
                  if isinstance(v, numbers.Real)}
        result.update({'epoch': epoch, self.report_as: value})
        tune.report(result)
        return False
