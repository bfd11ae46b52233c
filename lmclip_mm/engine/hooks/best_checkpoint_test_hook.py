"""The honest protocol's last step: test the best-on-val checkpoint once."""
import json
import os.path as osp
from typing import Optional

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class BestCheckpointTestHook(Hook):
    """After training, load the best checkpoint and run the test loop once.

    With the validation loop on a held-out split (``split='val'``), the
    checkpoint hook's ``save_best`` picks the best epoch on val; this hook
    then evaluates THAT checkpoint on the test split, once, at the end of
    training (mmengine's runner has no "test after train"). The test metrics
    are logged as usual (``test/...`` keys; LoggerHook) and written to
    ``<work_dir>/test_best_checkpoint.json`` together with the checkpoint and
    its val score.

    Config (the ``configs/*_honest.py`` files do this)::

        default_hooks = dict(test_best=dict(type='BestCheckpointTestHook'))

    The config needs ``test_dataloader`` / ``test_evaluator`` / ``test_cfg``
    and a checkpoint hook with ``save_best``.

    Args:
        metric (str, optional): which of the checkpoint hook's ``save_best``
            keys chooses the checkpoint (e.g. ``'multi-label/mAP'``).
            Defaults to its first key.
    """

    priority = 'LOW'  # after the NORMAL hooks; before VERY_LOW checkpoint
    RESULT_FILE = 'test_best_checkpoint.json'

    def __init__(self, metric: Optional[str] = None) -> None:
        self.metric = metric
        self.result = None

    def _checkpoint_hook(self, runner) -> CheckpointHook:
        hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
        if not hooks or not hooks[0].save_best:
            raise RuntimeError(
                'BestCheckpointTestHook: the config has no checkpoint hook '
                "with save_best (default_hooks.checkpoint.save_best='...'), "
                'so there is no best checkpoint to test')
        return hooks[0]

    def before_train(self, runner) -> None:
        # fail before training, not after 50 epochs
        ckpt_hook = self._checkpoint_hook(runner)
        keys = list(ckpt_hook.key_indicators)
        if self.metric is not None and self.metric not in keys \
                and keys != ['auto']:
            raise ValueError(
                f'BestCheckpointTestHook: metric={self.metric!r} is not one '
                f"of the checkpoint hook's save_best keys {keys}")
        if getattr(runner, '_val_loop', None) is None:
            raise RuntimeError(
                'BestCheckpointTestHook: no validation loop (--no-validate '
                'or no val_dataloader), so no best checkpoint would be '
                'saved and the test split would not be evaluated')
        if getattr(runner, '_test_loop', None) is None:
            raise RuntimeError(
                'BestCheckpointTestHook: the config has no test_dataloader / '
                'test_evaluator / test_cfg')

    def _best(self, runner):
        ckpt_hook = self._checkpoint_hook(runner)
        keys = list(ckpt_hook.key_indicators)
        key = self.metric or keys[0]
        hub = runner.message_hub
        if len(keys) == 1:
            path, score = hub.get_info('best_ckpt'), hub.get_info(
                'best_score')
        else:
            path = hub.get_info(f'best_ckpt_{key}')
            score = hub.get_info(f'best_score_{key}')
        return key, path, score

    def after_train(self, runner) -> None:
        key, path, score = self._best(runner)
        if not path:
            raise RuntimeError(
                'BestCheckpointTestHook: no best checkpoint was saved (did '
                'the validation loop run? --no-validate disables it), so the '
                'test split was not evaluated')
        barrier()  # rank 0 wrote the file
        runner.logger.info(
            f'BestCheckpointTestHook: testing the best checkpoint by {key} '
            f'on {runner.val_loop.dataloader.dataset.__class__.__name__} '
            f'split='
            f'{getattr(runner.val_loop.dataloader.dataset, "split", "?")}'
            f' (score {score}): {path}')
        runner.load_checkpoint(path, map_location='cpu')
        metrics = runner.test_loop.run()
        self.result = dict(
            checkpoint=path, metric=key, val_score=_plain(score),
            test_metrics={k: _plain(v) for k, v in metrics.items()})
        runner.message_hub.update_info('test_best_checkpoint', self.result)
        if is_main_process():
            out = osp.join(runner.work_dir, self.RESULT_FILE)
            with open(out, 'w') as f:
                json.dump(self.result, f, indent=2)
            runner.logger.info(f'BestCheckpointTestHook: test metrics of '
                               f'the best checkpoint written to {out}')


def _plain(value):
    """JSON-able: numpy / torch scalars to float."""
    if hasattr(value, 'item') and getattr(value, 'ndim', 0) == 0:
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# the name of the first releases (configs written for them keep working)
HOOKS.register_module(name='TestBestCheckpointHook',
                      module=BestCheckpointTestHook)
