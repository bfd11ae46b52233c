"""AtomicCheckpointHook: a kill during a save never leaves a half-written
checkpoint or a dangling ``last_checkpoint`` (children SIGKILLed mid-write),
and every checkpoint file and the pointer go through the atomic write."""
import os
import signal
from pathlib import Path

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

import reliability_helpers  # noqa: F401  (registers the test backends)

from lmclip_mm.engine.hooks import AtomicCheckpointHook
from lmclip_mm.fileio import atomic_local_backend
from lmclip_mm.fileio.atomic_local_backend import TEMP_SUFFIX

_counter = [0]


class RisingScore(BaseMetric):
    """A score that improves at every validation (new best each time)."""
    default_prefix = 'toy'
    calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        RisingScore.calls += 1
        return dict(score=float(RisingScore.calls))


@pytest.fixture(scope='module', autouse=True)
def scope():
    name = 'test_atomic_checkpoint_hook'
    if not DefaultScope.check_instance_created(name):
        DefaultScope.get_instance(name, scope_name='mmpretrain')


def make_runner(work_dir, checkpoint, max_epochs=1, val=False, resume=False):
    _counter[0] += 1
    loader = dict(
        dataset=dict(type='RandomAugDataset', n=6),
        sampler=dict(type='DefaultSampler', shuffle=True),
        batch_size=2, num_workers=0,
        collate_fn=dict(type='default_collate'))
    kwargs = {}
    if val:
        kwargs = dict(val_dataloader=dict(loader, sampler=dict(
            type='DefaultSampler', shuffle=False)),
            val_evaluator=[RisingScore()], val_cfg=dict())
    return Runner(
        model=dict(type='ToyNet'),
        work_dir=str(work_dir),
        experiment_name=f'atomic_ckpt_{_counter[0]}',
        train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs,
                       val_interval=1),
        default_hooks=dict(checkpoint=checkpoint),
        randomness=dict(seed=0),
        default_scope='mmpretrain',
        resume=resume,
        log_level='WARNING',
        **kwargs)


def pointer(work_dir):
    return (Path(work_dir) / 'last_checkpoint').read_text().strip()


def loads(path):
    ckpt = _load_checkpoint(str(path), map_location='cpu')
    return ckpt['meta']['iter']


def run_killed_child(work_dir, checkpoint, kill_at_write):
    """Train in a forked child that SIGKILLs itself in the middle of its
    ``kill_at_write``-th write through the test backend."""
    count_file = Path(work_dir).parent / f'{Path(work_dir).name}.count'
    pid = os.fork()
    if pid == 0:
        try:
            torch.set_num_threads(1)
            os.environ['LMCLIP_TEST_KILL_AT_WRITE'] = str(kill_at_write)
            os.environ['LMCLIP_TEST_WRITE_COUNT_FILE'] = str(count_file)
            make_runner(work_dir, checkpoint).train()
        finally:
            os._exit(3)  # not reached when killed
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and \
        os.WTERMSIG(status) == signal.SIGKILL, 'the child was not killed'


def atomic(**kw):
    return dict(type='AtomicCheckpointHook', by_epoch=False, interval=1,
                max_keep_ckpts=1, **kw)


def test_kill_while_writing_a_checkpoint(tmp_path):
    # writes: iter_1.pth, pointer, iter_2.pth (killed half-way), ...
    work = tmp_path / 'w'
    run_killed_child(
        work, atomic(backend_args=dict(backend='test_killing_atomic')), 3)
    assert pointer(work).endswith('iter_1.pth')
    assert loads(pointer(work)) == 1  # complete, although max_keep_ckpts=1
    assert not (work / 'iter_2.pth').exists()
    assert len([p for p in os.listdir(work) if p.endswith(TEMP_SUFFIX)]) == 1
    # resuming works and cleans the killed writer's temporary file
    runner = make_runner(work, atomic(), max_epochs=1, resume=True)
    runner.train()
    n = runner.iter  # (mmengine re-runs the epoch: no ExactResumeHook here)
    assert [p for p in os.listdir(work) if p.endswith(TEMP_SUFFIX)] == []
    assert pointer(work).endswith(f'iter_{n}.pth')
    assert loads(pointer(work)) == n
    assert sorted(p.name for p in work.glob('*.pth')) == [f'iter_{n}.pth']


def test_kill_while_writing_last_checkpoint(tmp_path):
    work = tmp_path / 'w'
    run_killed_child(
        work, atomic(backend_args=dict(backend='test_killing_atomic')), 4)
    # the pointer still names the previous checkpoint, which still exists
    assert pointer(work).endswith('iter_1.pth') and loads(pointer(work)) == 1
    assert loads(work / 'iter_2.pth') == 2


def test_control_mmengine_checkpoint_hook_loses_the_checkpoint(tmp_path):
    """Without the feature (mmengine's hook, in-place writes), the same kill
    leaves last_checkpoint naming a removed file and a half-written one."""
    work = tmp_path / 'w'
    plain = dict(type='CheckpointHook', by_epoch=False, interval=1,
                 max_keep_ckpts=1,
                 backend_args=dict(backend='test_killing_plain'))
    run_killed_child(work, plain, 2)  # mmengine writes the pointer itself
    assert pointer(work).endswith('iter_1.pth')
    assert not Path(pointer(work)).exists()
    with pytest.raises(Exception):
        loads(work / 'iter_2.pth')


def test_every_file_goes_through_the_atomic_write(tmp_path, monkeypatch):
    written = []
    original = atomic_local_backend.atomic_write_bytes

    def recording(path, data, write=atomic_local_backend._write_all):
        written.append(os.path.realpath(path))
        return original(path, data, write=write)

    monkeypatch.setattr(atomic_local_backend, 'atomic_write_bytes',
                        recording)
    hook = dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=1,
                save_best='toy/score', rule='greater',
                published_keys=['meta', 'state_dict'])
    runner = make_runner(tmp_path, hook, max_epochs=3, val=True)
    runner.train()
    assert isinstance(runner.hooks[-1], AtomicCheckpointHook) or any(
        isinstance(h, AtomicCheckpointHook) for h in runner.hooks)
    files = {
        os.path.realpath(p)
        for p in list(tmp_path.glob('*.pth')) + [tmp_path / 'last_checkpoint']
    }
    names = sorted(p.name for p in tmp_path.glob('*.pth'))
    # max_keep_ckpts=1, a new best at every epoch, published copies
    assert 'epoch_3.pth' in names and 'best_toy_score_epoch_3.pth' in names
    assert not {'epoch_1.pth', 'epoch_2.pth', 'best_toy_score_epoch_2.pth'
                } & set(names)
    assert any(n.startswith('epoch_3-') for n in names)  # published
    assert files <= set(written), files - set(written)
    assert [p for p in os.listdir(tmp_path) if p.endswith(TEMP_SUFFIX)] == []


def test_best_checkpoint_replaced_only_after_the_new_one_is_complete(
        tmp_path, monkeypatch):
    events = []
    original = atomic_local_backend.atomic_write_bytes

    def recording(path, data, write=atomic_local_backend._write_all):
        events.append(('write', os.path.basename(path)))
        return original(path, data, write=write)

    monkeypatch.setattr(atomic_local_backend, 'atomic_write_bytes',
                        recording)
    real_remove = atomic_local_backend.AtomicLocalBackend.remove

    def remove(self, path):
        events.append(('remove', os.path.basename(path)))
        return real_remove(self, path)

    monkeypatch.setattr(atomic_local_backend.AtomicLocalBackend, 'remove',
                        remove)
    hook = dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=1,
                save_best='toy/score', rule='greater')
    make_runner(tmp_path, hook, max_epochs=2, val=True).train()
    new_best = events.index(('write', 'best_toy_score_epoch_2.pth'))
    assert events.index(('remove', 'best_toy_score_epoch_1.pth')) > new_best
    new_ckpt = events.index(('write', 'epoch_2.pth'))
    assert events.index(('remove', 'epoch_1.pth')) > new_ckpt


def test_mmengine_hook_with_the_backend_misses_last_checkpoint(
        tmp_path, monkeypatch):
    """Why the hook exists: mmengine's CheckpointHook with
    ``backend_args=dict(backend='atomic_local')`` routes the .pth files
    (periodic and best) through the backend, but writes last_checkpoint with
    a plain open()."""
    written = []
    original = atomic_local_backend.atomic_write_bytes

    def recording(path, data, write=atomic_local_backend._write_all):
        written.append(os.path.basename(path))
        return original(path, data, write=write)

    monkeypatch.setattr(atomic_local_backend, 'atomic_write_bytes',
                        recording)
    hook = dict(type='CheckpointHook', interval=1, save_best='toy/score',
                rule='greater', backend_args=dict(backend='atomic_local'))
    make_runner(tmp_path, hook, max_epochs=1, val=True).train()
    assert {'epoch_1.pth', 'best_toy_score_epoch_1.pth'} <= set(written)
    assert (tmp_path / 'last_checkpoint').exists()
    assert 'last_checkpoint' not in written
