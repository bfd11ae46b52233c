"""SafeOptimWrapper: stop (or skip) on non-finite losses/gradients, naming
the iteration and the loss terms, without stepping and without a new
checkpoint."""
from pathlib import Path

import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

import reliability_helpers  # noqa: F401

from lmclip_mm.engine.optim_wrappers import (
    SafeAmpOptimWrapper, SafeOptimWrapper, TrainingDivergedError)

ITERS_PER_EPOCH = 3  # 6 samples, batch 2
_counter = [0]


@pytest.fixture(scope='module', autouse=True)
def scope():
    name = 'test_safe_optim_wrapper'
    if not DefaultScope.check_instance_created(name):
        DefaultScope.get_instance(name, scope_name='mmpretrain')


def make_runner(work_dir, model, max_epochs=2, optim_type='SafeOptimWrapper',
                **optim):
    _counter[0] += 1
    return Runner(
        model=model,
        work_dir=str(work_dir),
        experiment_name=f'safe_optim_{_counter[0]}',
        train_dataloader=dict(
            dataset=dict(type='RandomAugDataset', n=6),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=2, num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(
            type=optim_type,
            optimizer=dict(type='AdamW', lr=0.1), **optim),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(
            type='CheckpointHook', by_epoch=False, interval=1)),
        randomness=dict(seed=0),
        default_scope='mmpretrain',
        log_level='WARNING')


def params(state_dict):
    return {k: v.clone() for k, v in state_dict.items()}


def assert_equal_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def ckpt(work_dir, it):
    return _load_checkpoint(str(Path(work_dir) / f'iter_{it}.pth'),
                            map_location='cpu')


def test_resolved_by_the_runner(tmp_path):
    runner = make_runner(tmp_path, dict(type='ToyNet'), max_epochs=1)
    runner.train()
    assert type(runner.optim_wrapper) is SafeOptimWrapper
    assert runner.optim_wrapper.total_skips == 0


def test_nan_loss_stops_with_iteration_and_terms(tmp_path, caplog):
    runner = make_runner(tmp_path, dict(type='ToyNet', nan_at_iter=[5]))
    with pytest.raises(TrainingDivergedError) as info:
        runner.train()
    msg = str(info.value)
    assert 'non-finite loss at iteration 5 (epoch 2)' in msg
    assert 'loss=nan' in msg and 'loss_aux=nan' in msg
    assert 'loss_ce=' in msg and 'loss_ce=nan' not in msg
    # the last checkpoint is the last good iteration's, and the weights in
    # memory were not updated by the bad step
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_4.pth')
    assert not (tmp_path / 'iter_5.pth').exists()
    assert_equal_weights(params(runner.model.state_dict()),
                         ckpt(tmp_path, 4)['state_dict'])
    for p in runner.model.parameters():
        assert p.grad is None or not p.grad.any()


def test_non_finite_gradient_stops_naming_the_parameters(tmp_path):
    runner = make_runner(tmp_path, dict(type='ToyNet', inf_grad_at_iter=[2]))
    with pytest.raises(TrainingDivergedError) as info:
        runner.train()
    msg = str(info.value)
    assert 'non-finite gradients at iteration 2 (epoch 1)' in msg
    assert 'fc.weight' in msg and 'loss_aux=' in msg
    assert 'loss=nan' not in msg  # the loss itself was finite
    assert_equal_weights(params(runner.model.state_dict()),
                         ckpt(tmp_path, 1)['state_dict'])


def test_without_the_wrapper_nan_goes_into_the_weights(tmp_path):
    """The control: mmengine's OptimWrapper steps with NaN gradients and
    checkpoints NaN weights."""
    runner = make_runner(tmp_path, dict(type='ToyNet', nan_at_iter=[2]),
                         max_epochs=1, optim_type='OptimWrapper')
    runner.train()
    weights = ckpt(tmp_path, 2)['state_dict']['fc.weight']
    assert torch.isnan(weights).all()


def test_skip_continues_and_leaves_the_weights(tmp_path, caplog):
    runner = make_runner(tmp_path, dict(type='ToyNet', nan_at_iter=[3]),
                         on_nonfinite='skip')
    runner.train()  # completes
    assert runner.iter == 2 * ITERS_PER_EPOCH
    assert runner.optim_wrapper.total_skips == 1
    assert_equal_weights(ckpt(tmp_path, 3)['state_dict'],
                         ckpt(tmp_path, 2)['state_dict'])
    w4 = ckpt(tmp_path, 4)['state_dict']['fc.weight']
    assert not torch.equal(w4, ckpt(tmp_path, 3)['state_dict']['fc.weight'])
    assert torch.isfinite(w4).all()
    log = (next(tmp_path.glob('*/*.log'))).read_text()
    assert 'Skipped the optimizer step: non-finite loss at iteration 3 ' \
        '(epoch 1): loss=nan' in log


def test_too_many_consecutive_skips_stop(tmp_path):
    runner = make_runner(
        tmp_path, dict(type='ToyNet', nan_at_iter=[2, 3, 4]),
        on_nonfinite='skip', max_consecutive_skips=2)
    with pytest.raises(TrainingDivergedError,
                       match=r'iteration 4 .*3 optimizer steps in a row'):
        runner.train()
    assert_equal_weights(params(runner.model.state_dict()),
                         ckpt(tmp_path, 1)['state_dict'])


def test_gradient_accumulation_names_the_bad_micro_step(tmp_path):
    # updates after iterations 2, 4, 6: the NaN of iteration 3 stops the
    # update of iteration 4, before any step with it
    runner = make_runner(tmp_path, dict(type='ToyNet', nan_at_iter=[3]),
                         accumulative_counts=2)
    with pytest.raises(TrainingDivergedError,
                       match='non-finite loss at iteration 3 '):
        runner.train()
    assert (tmp_path / 'iter_3.pth').exists()  # a micro-step, no update
    assert not (tmp_path / 'iter_4.pth').exists()
    assert_equal_weights(params(runner.model.state_dict()),
                         ckpt(tmp_path, 2)['state_dict'])


def test_arguments_are_checked():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match='on_nonfinite'):
        SafeOptimWrapper(optimizer=opt, on_nonfinite='ignore')
    with pytest.raises(ValueError, match='max_consecutive_skips'):
        SafeOptimWrapper(optimizer=opt, max_consecutive_skips=-1)


def test_plain_module_without_parse_losses():
    """Any nn.Module: only the total loss can be named."""
    from mmengine.logging import MessageHub
    MessageHub.get_instance('test_plain_module_without_runner')
    model = torch.nn.Linear(2, 1)
    wrapper = SafeOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with wrapper.optim_context(model):
        loss = model(torch.ones(1, 2)).sum() * float('nan')
    with pytest.raises(TrainingDivergedError, match=r'at update 1: loss=nan'):
        wrapper.update_params(loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_amp_variant_stops_on_nan_loss():
    model = torch.nn.Linear(2, 1).cuda()
    wrapper = SafeAmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        loss = model(torch.ones(1, 2).cuda()).sum() * float('nan')
    with pytest.raises(TrainingDivergedError, match='loss=nan'):
        wrapper.update_params(loss)
    assert torch.equal(model.weight.detach(), before)
