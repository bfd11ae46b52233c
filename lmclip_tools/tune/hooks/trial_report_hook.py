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


def trial_record(history, rule: str, objective: str) -> Dict:
    """The value of a trial whose validations so far are ``history``
    (``[[epoch, metric], ...]``): see :class:`TrialReportHook`."""
    values = [v for _, v in history]
    best = (max if rule == 'greater' else min)(values)
    best_epoch = history[values.index(best)][0]
    if objective == 'best':
        value, value_epoch = best, best_epoch
    else:
        value, value_epoch = values[-1], history[-1][0]
    return dict(objective=objective, history=history, value=value,
                value_epoch=value_epoch, best=best, best_epoch=best_epoch,
                last=values[-1])


@HOOKS.register_module()
class TrialReportHook(Hook):
    """Record the tuned metric of each validation of a training run.

    After every validation during training it resolves ``metric`` (see
    :func:`resolve_metric`), appends ``(epoch, metric)`` to
    ``<work_dir>/<out_file>`` (JSON, replaced atomically) and passes the
    trial's value so far to :meth:`report`, which says whether to stop; a
    stop ends training cleanly after this epoch
    (``train_loop.stop_training``, as mmengine's EarlyStoppingHook) and is
    written to the file as ``stopped_epoch``. Subclasses report to a tuner
    (:class:`OptunaPruningHook`, :class:`RayTuneReportHook`); this class
    never stops.

    **A trial's value** after epoch *e* is, with ``objective='best'``, the
    best (by ``rule``) metric of epochs 1..*e*, and with ``'last'`` the
    metric of epoch *e*. The same number goes to the pruner (Optuna's or
    Ray's ASHA), the file, the tuner's log, table and ``trials.csv``: the
    value a pruned trial shows is the one it was pruned with.

    The file holds ``metric`` (the resolved key), ``objective``,
    ``history`` (list of ``[epoch, metric]``), ``value`` and
    ``value_epoch`` (the trial's value and the epoch it comes from),
    ``best``/``best_epoch``/``last`` and ``stopped_epoch`` (None unless
    stopped). Under DDP rank 0 decides and the decision is broadcast, so
    all ranks stop together. The hook runs after the checkpoint hook, so
    an epoch's best checkpoint is on disk before a tuner may end the
    process (Ray's ASHA does).
    """

    priority = 'LOWEST'

    def __init__(self, metric: str = 'mAP_tail', rule: str = 'greater',
                 objective: str = 'best',
                 out_file: str = 'trial_report.json') -> None:
        if rule not in ('greater', 'less'):
            raise ValueError(f"rule must be 'greater' or 'less', got {rule!r}")
        if objective not in ('best', 'last'):
            raise ValueError("objective must be 'best' or 'last', got "
                             f'{objective!r}')
        self.metric = metric
        self.rule = rule
        self.objective = objective
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
            record = self._write(runner)
            last_epoch = epoch >= runner.max_epochs
            stop[0] = bool(self.report(runner, epoch, record['value'],
                                       metrics)) and not last_epoch
            if stop[0]:
                self.stopped_epoch = epoch
                print_log(
                    f'{type(self).__name__}: stopping this trial after epoch '
                    f'{epoch} ({self.key}={record["value"]:.4f}, '
                    f'{self.objective} of epochs 1-{epoch})',
                    logger='current')
                self._write(runner)
        if get_world_size() > 1:
            broadcast_object_list(stop)
        if stop[0]:
            runner.train_loop.stop_training = True

    def _write(self, runner) -> Dict:
        record = trial_record(self.history, self.rule, self.objective)
        record.update(metric=self.key, stopped_epoch=self.stopped_epoch)
        path = osp.join(runner.work_dir, self.out_file)
        tmp = f'{path}.tmp-{os.getpid()}'
        with open(tmp, 'w') as f:
            json.dump(record, f)
        os.replace(tmp, path)
        return record
