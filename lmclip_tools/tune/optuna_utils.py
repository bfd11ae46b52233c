# Copyright (c) lmclip_mm authors.
"""Optuna objects both the tuner and the trials' pruning hook build, and
Optuna's logging as both backends set it."""
import warnings
from contextlib import contextmanager
from typing import Dict, Optional

from .trials import dropped_log_records


def build_pruner(spec: Optional[Dict]):
    """An Optuna pruner from ``dict(type='SuccessiveHalvingPruner', ...)``
    (any class of ``optuna.pruners``); None gives ``NopPruner``."""
    import optuna
    if spec is None:
        return optuna.pruners.NopPruner()
    spec = dict(spec)
    cls = getattr(optuna.pruners, spec.pop('type'))
    return cls(**spec)


def sqlite_engine_kwargs(url: str) -> Dict:
    """Wait for SQLite's lock instead of failing (several processes)."""
    if url.startswith('sqlite'):
        return dict(connect_args=dict(timeout=120))
    return {}


@contextmanager
def quiet_optuna():
    """Optuna's own per-trial lines ("Trial N finished with value ...",
    "Trial N failed ... Traceback") say again what the tuner's ``[tune]``
    lines say, in both backends (Ray's ``OptunaSearch`` logs them too):
    off. The tuner's own warning says when a point lies outside the
    space."""
    import optuna
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings(), dropped_log_records(
                ['optuna.study._optimize'], ['Trial ']):
            warnings.filterwarnings('ignore', message='Fixed parameter .* '
                                    'is out of range', category=UserWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
