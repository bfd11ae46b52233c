"""Test-only hook for the multi-process tests (imported through
``custom_imports``; ``tests/helpers`` is on their PYTHONPATH)."""
import json
import os.path as osp

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class RecordLossHook(Hook):
    """Append every iteration's local losses (this rank's, unreduced) and
    batch size to ``<work_dir>/losses_rank<r>.jsonl``."""

    priority = 'LOWEST'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        record = dict(iter=runner.iter, batch=len(data_batch['inputs']))
        for key, value in (outputs or {}).items():
            record[key] = float(value)
        path = osp.join(runner.work_dir, f'losses_rank{get_rank()}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps(record) + '\n')
