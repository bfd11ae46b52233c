"""SafeOptimWrapper through tools/train.py and tools/dist_train.sh: a NaN
loss stops the run with the iteration and the loss terms, the last good
checkpoint stays the last one (one process, and two gloo processes where
only rank 1 diverges: both stop, none hangs)."""
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

CONFIG = '''
default_scope = 'mmpretrain'
custom_imports = dict(
    imports=['lmclip_mm', 'reliability_helpers'], allow_failed_imports=False)
model = dict(type='ToyNet', nan_at_iter=[{nan_at}], nan_rank={nan_rank})
train_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(type='RandomAugDataset', n=8),
    sampler=dict(type='DefaultSampler', shuffle=True))
optim_wrapper = dict(type='SafeOptimWrapper', on_nonfinite='{mode}',
                     optimizer=dict(type='AdamW', lr=0.1))
train_cfg = dict(by_epoch=True, max_epochs=2)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
'''


def write_config(tmp_path, nan_at, mode='stop', nan_rank=None):
    path = tmp_path / f'diverge_{mode}.py'
    path.write_text(CONFIG.format(nan_at=nan_at, mode=mode,
                                  nan_rank=nan_rank))
    return path


def env(extra=None):
    """Extra environment of a run (the tools find reliability_helpers on
    their PYTHONPATH: lmclip_testing.tool_env)."""
    return dict(extra or {})


def load(path):
    import lmclip_mm  # noqa: F401
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(str(path), map_location='cpu')


def test_nan_loss_stops_train_py(tool, tmp_path):
    work = tmp_path / 'work'
    proc = tool(['train.py', write_config(tmp_path, 6), '--work-dir', work],
                env=env(), check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert 'TrainingDivergedError' in err
    assert 'non-finite loss at iteration 6 (epoch 2): loss=nan, ' \
        'loss_ce=' in err and 'loss_aux=nan' in err
    assert (work / 'last_checkpoint').read_text().endswith('iter_5.pth')
    assert load(work / 'iter_5.pth')['meta']['iter'] == 5
    assert not (work / 'iter_6.pth').exists()
    # resuming from the last good checkpoint works (and meets the same NaN)
    proc = tool(['train.py', write_config(tmp_path, 6), '--work-dir', work,
                 '--resume'], env=env(), check=False)
    assert 'resumed epoch: 1, iter: 5' in proc.stdout + proc.stderr


def test_skip_completes_train_py(tool, tmp_path):
    work = tmp_path / 'work'
    proc = tool(['train.py', write_config(tmp_path, 3, 'skip'),
                 '--work-dir', work], env=env())
    log = proc.stdout + proc.stderr
    assert 'Skipped the optimizer step: non-finite loss at iteration 3 ' \
        '(epoch 1)' in log
    a = load(work / 'iter_2.pth')['state_dict']
    b = load(work / 'iter_3.pth')['state_dict']
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load(work / 'iter_8.pth')['meta']['iter'] == 8


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank(tool, tmp_path, port):
    work = tmp_path / 'work'
    proc = tool(['dist_train.sh', write_config(tmp_path, 2, nan_rank=1), '2',
                 '--work-dir', work],
                env=env({'PORT': str(port)}), check=False, timeout=300)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert 'non-finite loss at iteration 2 (epoch 1) on rank 1' in err
    # rank 0's loss was finite; DDP averaged rank 1's NaN into its gradients
    assert 'non-finite gradients at iteration 2 (epoch 1) on rank 0' in err
    # 8 samples, 2 per process and iteration: the good iteration 1 is saved
    assert (work / 'last_checkpoint').read_text().endswith('iter_1.pth')
    assert not (work / 'iter_2.pth').exists()
