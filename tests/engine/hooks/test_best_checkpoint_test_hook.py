"""BestCheckpointTestHook: which checkpoint it tests and when it refuses.

The end-to-end run is in tests/tools/test_honest_protocol.py.
"""
import json
from types import SimpleNamespace

import pytest
from mmengine.hooks import CheckpointHook
from mmengine.logging import MessageHub, MMLogger

from lmclip_mm.engine.hooks import BestCheckpointTestHook


class _Loop:
    def __init__(self, metrics=None):
        self.metrics = metrics
        self.runs = 0
        self.dataloader = SimpleNamespace(
            dataset=SimpleNamespace(split='val'))

    def run(self):
        self.runs += 1
        return self.metrics


def _runner(tmp_path, save_best=('a/mAP', 'a/mAP_tail'), hub_info=None,
            val=True, test=True):
    hooks = []
    if save_best is not None:
        hooks.append(CheckpointHook(
            interval=1, save_best=list(save_best) if len(save_best) > 1
            else save_best[0], rule='greater'))
    hub = MessageHub.get_instance(f'test_best_{id(hooks)}_{tmp_path.name}')
    for k, v in (hub_info or {}).items():
        hub.update_info(k, v)
    loaded = []
    runner = SimpleNamespace(
        hooks=hooks, message_hub=hub, work_dir=str(tmp_path),
        logger=MMLogger.get_instance('test_best_hook'),
        _val_loop={} if val else None, _test_loop={} if test else None,
        val_loop=_Loop(), test_loop=_Loop({'a/mAP': 50.0, 'a/AUROC': 90.0}),
        load_checkpoint=lambda path, map_location=None: loaded.append(path))
    runner.loaded = loaded
    return runner


def test_tests_the_first_save_best_key_by_default(tmp_path):
    runner = _runner(tmp_path, hub_info={
        'best_ckpt_a/mAP': '/w/best_a_mAP_epoch_2.pth',
        'best_score_a/mAP': 61.5,
        'best_ckpt_a/mAP_tail': '/w/best_a_mAP_tail_epoch_3.pth',
        'best_score_a/mAP_tail': 40.0})
    hook = BestCheckpointTestHook()
    hook.before_train(runner)
    hook.after_train(runner)
    assert runner.loaded == ['/w/best_a_mAP_epoch_2.pth']
    assert runner.test_loop.runs == 1
    result = json.loads((tmp_path / 'test_best_checkpoint.json').read_text())
    assert result == dict(checkpoint='/w/best_a_mAP_epoch_2.pth',
                          metric='a/mAP', val_score=61.5,
                          test_metrics={'a/mAP': 50.0, 'a/AUROC': 90.0})
    assert runner.message_hub.get_info('test_best_checkpoint') == result


def test_metric_picks_another_save_best_key(tmp_path):
    runner = _runner(tmp_path, hub_info={
        'best_ckpt_a/mAP': '/w/best_a_mAP_epoch_2.pth',
        'best_ckpt_a/mAP_tail': '/w/best_a_mAP_tail_epoch_3.pth',
        'best_score_a/mAP_tail': 40.0})
    hook = BestCheckpointTestHook(metric='a/mAP_tail')
    hook.before_train(runner)
    hook.after_train(runner)
    assert runner.loaded == ['/w/best_a_mAP_tail_epoch_3.pth']
    assert hook.result['val_score'] == 40.0


def test_single_save_best_key(tmp_path):
    runner = _runner(tmp_path, save_best=('a/mAP',), hub_info={
        'best_ckpt': '/w/best_a_mAP_epoch_1.pth', 'best_score': 12.0})
    hook = BestCheckpointTestHook()
    hook.before_train(runner)
    hook.after_train(runner)
    assert runner.loaded == ['/w/best_a_mAP_epoch_1.pth']


@pytest.mark.parametrize('kwargs, hook_kwargs, match', [
    (dict(save_best=None), {}, 'no checkpoint hook with save_best'),
    (dict(), dict(metric='b/mAP'), "metric='b/mAP' is not one of"),
    (dict(val=False), {}, 'no validation loop'),
    (dict(test=False), {}, 'no test_dataloader'),
])
def test_refuses_before_training(tmp_path, kwargs, hook_kwargs, match):
    runner = _runner(tmp_path, **kwargs)
    with pytest.raises((RuntimeError, ValueError), match=match):
        BestCheckpointTestHook(**hook_kwargs).before_train(runner)


def test_no_best_checkpoint_is_an_error(tmp_path):
    runner = _runner(tmp_path)
    hook = BestCheckpointTestHook()
    hook.before_train(runner)
    with pytest.raises(RuntimeError, match='no best checkpoint was saved'):
        hook.after_train(runner)
    assert runner.test_loop.runs == 0 and not runner.loaded
