"""ExactResumeHook: bit-exact resume from epoch and mid-epoch checkpoints
(in-process runners, interrupted by an exception after a checkpoint)."""
import copy
import random

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import reliability_helpers  # noqa: F401  (test components)

from lmclip_mm.engine.hooks.exact_resume_hook import (
    ExactResumeError, capture_rng_state, restore_rng_state)

ITERS_PER_EPOCH = 4  # 10 samples, batch 3 (last batch 1)
_counter = [0]


def make_runner(work_dir, *, hooks=(), resume_from=None, sampler=None,
                by_epoch=False, max_epochs=3, exact=True, strict=True,
                val=True, seed=7):
    _counter[0] += 1
    custom_hooks = list(hooks)
    if exact:
        custom_hooks.append(dict(type='ExactResumeHook', strict=strict))
    sampler = sampler or dict(type='ClassAwareRepeatSampler', power=1.0)
    loader = dict(
        dataset=dict(type='RandomAugDataset', n=10),
        sampler=sampler,
        batch_size=3,
        num_workers=0,
        collate_fn=dict(type='default_collate'))
    kwargs = {}
    if val:
        kwargs = dict(
            val_dataloader=dict(
                dataset=dict(type='RandomAugDataset', n=6, seed=1),
                sampler=dict(type='DefaultSampler', shuffle=True),
                batch_size=4, num_workers=0,
                collate_fn=dict(type='default_collate')),
            val_evaluator=dict(type='ToyAccuracy'),
            val_cfg=dict())
    return Runner(
        model=dict(type='ToyNet'),
        work_dir=str(work_dir),
        experiment_name=f'exact_resume_{_counter[0]}',
        train_dataloader=loader,
        optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=0.05, weight_decay=0.01)),
        param_scheduler=dict(type='MultiStepLR', by_epoch=True,
                             milestones=[2], gamma=0.1),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1,
                            by_epoch=by_epoch),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom_hooks,
        randomness=dict(seed=seed, deterministic=True),
        default_scope='mmpretrain',
        resume=resume_from is not None,
        load_from=resume_from,
        log_level='WARNING',
        **kwargs)


def final_state(runner):
    model = {k: v.clone() for k, v in runner.model.state_dict().items()}
    optim = copy.deepcopy(runner.optim_wrapper.state_dict())
    return model, optim


def assert_same_state(a, b):
    (ma, oa), (mb, ob) = a, b
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    sa, sb = oa['state'], ob['state']
    assert sa.keys() == sb.keys()
    for p in sa:
        for k in sa[p]:
            assert torch.equal(torch.as_tensor(sa[p][k]),
                               torch.as_tensor(sb[p][k])), (p, k)
    assert oa['param_groups'] == ob['param_groups']


@pytest.fixture(scope='module', autouse=True)
def scope():
    name = 'test_exact_resume_hook'
    if not DefaultScope.check_instance_created(name):
        DefaultScope.get_instance(name, scope_name='mmpretrain')


def train_interrupted(tmp_path, at, ckpt_name, **kwargs):
    runner = make_runner(
        tmp_path,
        hooks=[dict(type='InterruptAtIterHook', at=at,
                    epoch=kwargs.get('by_epoch', False))], **kwargs)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    # what a new process would find: RNGs somewhere else
    torch.manual_seed(12345)
    np.random.seed(12345)
    resumed = make_runner(tmp_path, resume_from=str(tmp_path / ckpt_name),
                          **kwargs)
    resumed.train()
    return resumed


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    runner = make_runner(tmp_path_factory.mktemp('reference'))
    runner.train()
    return final_state(runner), runner.message_hub.get_info('val/acc', None)


@pytest.mark.parametrize('at', [
    5,   # mid-epoch: epoch 2, batch 1 done
    7,   # mid-epoch, one batch left
    8,   # last batch of epoch 2 (checkpoint before validation)
])
def test_mid_epoch_resume_is_bit_exact(tmp_path, reference, at):
    resumed = train_interrupted(tmp_path, at, f'iter_{at}.pth')
    assert resumed.iter == 3 * ITERS_PER_EPOCH
    assert_same_state(final_state(resumed), reference[0])


def test_epoch_checkpoint_resume_is_bit_exact(tmp_path, tmp_path_factory):
    ref = make_runner(tmp_path_factory.mktemp('ref_epoch'), by_epoch=True)
    ref.train()
    # interrupted right after epoch 1's checkpoint, i.e. before validation
    resumed = train_interrupted(tmp_path, 1, 'epoch_1.pth', by_epoch=True)
    assert_same_state(final_state(resumed), final_state(ref))


def test_without_the_hook_resume_differs(tmp_path, reference):
    """The control: mmengine alone runs the interrupted epoch again."""
    resumed = train_interrupted(tmp_path, 5, 'iter_5.pth', exact=False)
    assert resumed.iter == 3 * ITERS_PER_EPOCH + 1  # epoch 2 ran again
    with pytest.raises(AssertionError):
        assert_same_state(final_state(resumed), reference[0])


def test_resumable_default_sampler(tmp_path, tmp_path_factory):
    sampler = dict(type='ResumableDefaultSampler', shuffle=True)
    ref = make_runner(tmp_path_factory.mktemp('ref_default'),
                      sampler=sampler)
    ref.train()
    resumed = train_interrupted(tmp_path, 6, 'iter_6.pth', sampler=sampler)
    assert_same_state(final_state(resumed), final_state(ref))


def test_default_sampler_mid_epoch_is_refused(tmp_path):
    sampler = dict(type='DefaultSampler', shuffle=True)
    runner = make_runner(
        tmp_path, sampler=sampler, val=False,
        hooks=[dict(type='InterruptAtIterHook', at=5)])
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    resumed = make_runner(tmp_path, sampler=sampler, val=False,
                          resume_from=str(tmp_path / 'iter_5.pth'))
    with pytest.raises(ExactResumeError, match='ResumableDefaultSampler'):
        resumed.train()
    # strict=False: mmengine's behaviour, with a warning
    lenient = make_runner(tmp_path, sampler=sampler, val=False,
                          strict=False,
                          resume_from=str(tmp_path / 'iter_5.pth'))
    lenient.train()
    assert lenient.iter == 3 * ITERS_PER_EPOCH + 1


def test_checkpoint_holds_the_state(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    runner = make_runner(tmp_path, max_epochs=1, val=False)
    runner.train()
    ckpt = _load_checkpoint(str(tmp_path / 'iter_3.pth'), map_location='cpu')
    state = ckpt['exact_resume']
    assert state['progress']['epoch'] == 0
    assert state['progress']['batches_done'] == 3
    assert state['progress']['batch_size'] == 3
    assert set(state['rng']) >= {'python', 'numpy', 'torch'}
    # loads weights-only (no new globals) and restores exactly
    before = capture_rng_state()
    a = (np.random.rand(), torch.rand(()).item(), random.random())
    restore_rng_state(before)
    b = (np.random.rand(), torch.rand(()).item(), random.random())
    assert a == b


def test_load_from_does_not_restore(tmp_path):
    runner = make_runner(tmp_path / 'a', max_epochs=1, val=False,
                         hooks=[dict(type='InterruptAtIterHook', at=2)])
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    new = make_runner(tmp_path / 'b', max_epochs=1, val=False)
    new._load_from = str(tmp_path / 'a' / 'iter_2.pth')
    new.train()  # a fresh run from those weights: a full epoch
    assert new.iter == ITERS_PER_EPOCH


def test_each_mechanism_is_needed(tmp_path, reference, monkeypatch):
    """Ablations: without the validation RNG isolation an epoch checkpoint
    (saved before validation) resumes differently; without the private
    generator for the resumed epoch's dataloader iterator a mid-epoch one
    does (the iterator draws a base seed from torch's global RNG)."""
    from lmclip_mm.engine.hooks import exact_resume_hook as module
    ref = make_runner(tmp_path / 'ref', by_epoch=True)
    ref.train()
    with monkeypatch.context() as m:
        m.setattr(module.ExactResumeHook, 'before_val', lambda *a: None)
        resumed = train_interrupted(tmp_path / 'a', 1, 'epoch_1.pth',
                                    by_epoch=True)
        with pytest.raises(AssertionError):
            assert_same_state(final_state(resumed), final_state(ref))

    original = module.ExactResumeHook.before_train_epoch

    def no_private_generator(self, runner):
        self._generator_epoch = None
        original(self, runner)

    with monkeypatch.context() as m:
        m.setattr(module.ExactResumeHook, 'before_train_epoch',
                  no_private_generator)
        resumed = train_interrupted(tmp_path / 'b', 5, 'iter_5.pth')
        with pytest.raises(AssertionError):
            assert_same_state(final_state(resumed), reference[0])


def test_random_seed_run_resumes_with_its_sampler_seed(tmp_path):
    """randomness=dict(seed=None): the resumed process draws another seed
    and builds its sampler with it; the hook restores the saved one."""
    from mmengine.runner.checkpoint import _load_checkpoint
    resumed = train_interrupted(tmp_path / 'run', 6, 'iter_6.pth', seed=None)
    seed = _load_checkpoint(str(tmp_path / 'run' / 'iter_6.pth'),
                            map_location='cpu')['meta']['seed']
    assert resumed.train_dataloader.sampler.seed == seed
    ref = make_runner(tmp_path / 'ref', seed=seed)
    ref.train()
    assert_same_state(final_state(resumed), final_state(ref))
