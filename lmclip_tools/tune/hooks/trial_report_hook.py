# Copyright (c) lmclip_mm authors.
"""Report a trial's validation metric after every evaluation (tuning)."""
import json
import os
import os.path as osp
from typing import Dict, Optional

from mmengine.dist import broadcast_object_list, get_world_size, \
    is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS


def resolve_metric(metrics: Dict, name: str) -> str:
    """The key of ``metrics`` that ``name`` stands for.

    ``name`` is a full key (``'long-tail/mAP_tail'``) or the part after
    the evaluator's prefix (``'mAP_tail'``): a renamed prefix does not
    change what is tuned. An unknown or ambiguous name is an error.
    """
    if name in metrics:
        return name
    found = [k for k in metrics if k.rsplit('/', 1)[-1] == name]
    if len(found) == 1:
        return found[0]
    if not found:
        raise KeyError(f'no validation metric {name!r} (nor any ending with '
                       f'/{name}) among {sorted(metrics)}')
    raise KeyError(f'validation metric {name!r} is ambiguous: '
                   f'{sorted(found)}; give the full key')


@HOOKS.register_module()
class TrialReportHook(Hook):
    """Record the tuned metric of each validation of a training run.

    After every validation during training it resolves ``metric`` (see
    :func:`resolve_metric`), appends ``(epoch, value)`` to
    ``<work_dir>/<out_file>`` (JSON, replaced atomically) and asks
    :meth:`report` whether to stop; a stop ends training cleanly after this
    epoch (``train_loop.stop_training``, as mmengine's EarlyStoppingHook)
    and is written to the file as ``stopped_epoch``. Subclasses report to a
    tuner (:class:`OptunaPruningHook`, :class:`RayTuneReportHook`); this
    class never stops.

    The file holds ``metric`` (the resolved key), ``history`` (list of
    ``[epoch, value]``), ``best``/``best_epoch``/``last`` and
    ``stopped_epoch`` (None unless stopped). Under DDP rank 0 decides and
    the decision is broadcast, so all ranks stop together.
    """

    priority = 'LOW'

    def __init__(self, metric: str = 'mAP_tail', rule: str = 'greater',
                 out_file: str = 'trial_report.json') -> None:
        if rule not in ('greater', 'less'):
            raise ValueError(f"rule must be 'greater' or 'less', got {rule!r}")
        self.metric = metric
        self.rule = rule
        self.out_file = out_file
        self.key: Optional[str] = None
        self.history = []
        self.stopped_epoch: Optional[int] = None
        self._training = False

    # -- to override ----------------------------------------------------------
    def report(self, runner, epoch: int, value: float, metrics: Dict) -> bool:
        """Report one value; return True to stop training (rank 0 only)."""
        return False

    # -------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        self._training = True

    def after_train(self, runner) -> None:
        self._training = False

    def after_val_epoch(self, runner, metrics: Optional[Dict] = None) -> None:
        if not self._training or not metrics:
            return
        epoch = runner.epoch
        stop = [False]
        if is_main_process():
            self.key = resolve_metric(metrics, self.metric)
            value = float(metrics[self.key])
            self.history.append([epoch, value])
            # written before reporting: a tuner may end this process when
            # it gets the report (Ray at max_t)
            self._write(runner)
            last_epoch = epoch >= runner.max_epochs
            stop[0] = bool(self.report(runner, epoch, value, metrics)) \
                and not last_epoch
            if stop[0]:
                self.stopped_epoch = epoch
                print_log(
                    f'{type(self).__name__}: stopping this trial after epoch '
                    f'{epoch} ({self.key}={value:.4f})', logger='current')
                self._write(runner)
        if get_world_size() > 1:
            broadcast_object_list(stop)
        if stop[0]:
            runner.train_loop.stop_training = True

    def _write(self, runner) -> None:
        values = [v for _, v in self.history]
        pick = max if self.rule == 'greater' else min
        best = pick(values)
        record = dict(
            metric=self.key,
            history=self.history,
            best=best,
            best_epoch=self.history[values.index(best)][0],
            last=values[-1],
            stopped_epoch=self.stopped_epoch)
        path = osp.join(runner.work_dir, self.out_file)
        tmp = f'{path}.tmp-{os.getpid()}'
        with open(tmp, 'w') as f:
            json.dump(record, f)
        os.replace(tmp, path)
