# Copyright (c) lmclip_mm authors.
"""Optuna objects both the tuner and the trials' pruning hook build."""
from typing import Dict, Optional


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
