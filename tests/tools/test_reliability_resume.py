"""Exact resume through tools/train.py: a run SIGKILLed in the middle of an
epoch and resumed with --resume ends bit-identical (every weight, every
optimizer tensor, the validation metrics) to an uninterrupted run.

Parametrised by config: add a :class:`Case` to ``CASES`` (e.g. the LM-CLIP
toy config) with the cfg-options it needs and the python text appended to
the derived config (sampler, random augmentation, ...)."""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from lmclip_testing import TINY_CFG

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    id: str
    config: Path
    #: ``request -> list of --cfg-options`` (request: pytest's, for fixtures)
    options: Callable = lambda request: []
    #: python text appended to the derived config (after the base config)
    extra: str = ''
    max_epochs: int = 3


TINY_EXTRA = '''
train_dataloader = dict(
    batch_size=2,
    sampler=dict(_delete_=True, type='ClassAwareRepeatSampler', power=1.0),
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=32),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs'),
    ]))
'''

CASES = [
    Case(
        id='tiny_cls',
        config=TINY_CFG,
        options=lambda request: request.getfixturevalue('tiny_options'),
        extra=TINY_EXTRA),  # 8 images, batch 2: 4 iterations per epoch
    # the LM-CLIP quickstart (its toy set is generated on first use)
    Case(id='lmclip_toy', config=REPO / 'configs/lmclip_toy_mlt_tiny.py',
         options=lambda request: ['train_cfg.val_interval=1'] + [
             f'{k}.dataset.data_root={request.getfixturevalue("tmp_path")}'
             '/toy' for k in ('train_dataloader', 'val_dataloader',
                              'test_dataloader')],
         max_epochs=2),
]


def derived_config(tmp_path, case, kill_at=None):
    from mmengine.config import Config
    base = Config.fromfile(str(case.config))
    hooks = [repr(h.to_dict() if hasattr(h, 'to_dict') else dict(h))
             for h in base.get('custom_hooks', [])
             if h.get('type') != 'ExactResumeHook']
    hooks.append("dict(type='ExactResumeHook')")
    if kill_at is not None:
        hooks.append(f"dict(type='InterruptAtIterHook', at={kill_at}, "
                     "mode='kill', before=True)")
    text = f'''_base_ = {str(case.config)!r}
custom_imports = dict(
    imports=['lmclip_mm', 'reliability_helpers'], allow_failed_imports=False)
{case.extra}
default_hooks = dict(checkpoint=dict(
    type='AtomicCheckpointHook', by_epoch=False, interval=1))
custom_hooks = [{', '.join(hooks)}]
randomness = dict(seed=3, deterministic=True)
train_cfg = dict(max_epochs={case.max_epochs})
'''
    path = tmp_path / f'{case.id}_{"killed" if kill_at else "plain"}.py'
    path.write_text(text)
    return path


def train(tool, config, work_dir, options, *extra, check=True):
    return tool(['train.py', config, '--work-dir', work_dir, *extra,
                 '--cfg-options', *options], check=check)


def load(path):
    import lmclip_mm  # noqa: F401
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(str(path), map_location='cpu')


def tensors(obj, prefix=''):
    """Every tensor (and number) in a nested state dict, by path."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(tensors(v, f'{prefix}/{k}'))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(tensors(v, f'{prefix}/{i}'))
    elif torch.is_tensor(obj) or isinstance(obj, (int, float)):
        out[prefix] = obj
    return out


def val_metrics(work_dir):
    """The validation records (without timings) of all logs of a run."""
    records = []
    for log in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        records += [json.loads(x) for x in log.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ('time', 'data_time')}
            for r in records if 'loss' not in r and 'lr' not in r]


@pytest.mark.slow
@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_sigkill_mid_epoch_then_resume_is_bit_exact(case, tool, tmp_path,
                                                    request):
    options = case.options(request)
    ref_dir = tmp_path / 'reference'
    train(tool, derived_config(tmp_path, case), ref_dir, options)
    total = load((ref_dir / 'last_checkpoint').read_text().strip())[
        'meta']['iter']
    per_epoch = total // case.max_epochs
    assert per_epoch >= 3 and case.max_epochs >= 2, 'too short to kill ' \
        'in the middle of an epoch'
    # die in the middle of an epoch other than the first: batch loaded,
    # not trained; the last checkpoint is that of the batch before
    kill_at = per_epoch + per_epoch // 2 + 1

    work = tmp_path / 'interrupted'
    killed = train(tool, derived_config(tmp_path, case, kill_at), work,
                   options, check=False)
    assert killed.returncode == -9, killed.stderr[-3000:]
    last = (work / 'last_checkpoint').read_text().strip()
    assert last.endswith(f'iter_{kill_at - 1}.pth')
    assert not (work / f'iter_{total}.pth').exists()

    proc = train(tool, derived_config(tmp_path, case), work, options,
                 '--resume')
    log = proc.stdout + proc.stderr
    assert f'resumed epoch: {(kill_at - 1) // per_epoch}, ' \
        f'iter: {kill_at - 1}' in log
    assert 'ExactResumeHook: resuming at batch' in log

    ref, res = load(ref_dir / f'iter_{total}.pth'), load(
        work / f'iter_{total}.pth')
    assert res['meta']['iter'] == total
    for part in ('state_dict', 'optimizer', 'param_schedulers'):
        a, b = tensors(ref[part]), tensors(res[part])
        assert a.keys() == b.keys(), part
        for k in a:
            if torch.is_tensor(a[k]):
                assert torch.equal(a[k], b[k]), f'{part}{k}'
            else:
                assert a[k] == b[k], f'{part}{k}'
    ref_metrics, res_metrics = val_metrics(ref_dir), val_metrics(work)
    assert ref_metrics and res_metrics[-1] == ref_metrics[-1]
