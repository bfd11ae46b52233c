"""tools/train.py end to end: train with validation, resume, load_from."""
import json

import pytest
import torch

ITERS_PER_EPOCH = 2  # 8 train images, batch 4


def _load(path):
    import lmclip_mm  # noqa: F401  (allow-lists mmengine's globals)
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(str(path), map_location='cpu')


def _params(ckpt):
    return {
        k: v
        for k, v in ckpt['state_dict'].items()
        if 'running_' not in k and 'num_batches_tracked' not in k
    }


def _scalars(work_dir):
    """The per-iteration/epoch records mmengine's LoggerHook writes."""
    logs = sorted(work_dir.glob('*/vis_data/scalars.json'))
    records = []
    for log in logs:
        records += [json.loads(line) for line in log.read_text().splitlines()]
    return records


@pytest.fixture(scope='module')
def first_run(tmp_path_factory, tool, tiny_cfg, tiny_options):
    work_dir = tmp_path_factory.mktemp('train')
    proc = tool(['train.py', tiny_cfg, '--work-dir', work_dir,
                 '--cfg-options', *tiny_options])
    return work_dir, proc


def test_trains_two_epochs_with_validation(first_run):
    work_dir, proc = first_run
    assert (work_dir / 'epoch_1.pth').is_file()
    assert (work_dir / 'epoch_2.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith(
        'epoch_2.pth')
    records = _scalars(work_dir)
    val = [r for r in records if 'accuracy/top1' in r]
    assert [r['step'] for r in val] == [1, 2], 'validation after each epoch'
    ckpt = _load(work_dir / 'epoch_2.pth')
    assert ckpt['meta']['epoch'] == 2
    assert ckpt['meta']['iter'] == 2 * ITERS_PER_EPOCH


def test_resume_continues_with_optimizer_and_scheduler_state(
        first_run, tool, tiny_cfg, tiny_options):
    work_dir, _ = first_run
    before = _load(work_dir / 'epoch_2.pth')
    proc = tool(['train.py', tiny_cfg, '--work-dir', work_dir, '--resume',
                 '--cfg-options', 'train_cfg.max_epochs=3', *tiny_options])
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 2, iter: 4' in log
    after = _load(work_dir / 'epoch_3.pth')
    assert after['meta']['epoch'] == 3
    assert after['meta']['iter'] == 3 * ITERS_PER_EPOCH
    # AdamW's step counters continue from the resumed state (2 epochs + 1).
    steps = {int(s['step']) for s in after['optimizer']['state'].values()}
    assert steps == {3 * ITERS_PER_EPOCH}
    # MultiStepLR (milestone 1, gamma 0.1) keeps its decayed state.
    assert after['optimizer']['param_groups'][0]['lr'] == pytest.approx(1e-3)
    sched_before = before['param_schedulers'][0]
    sched_after = after['param_schedulers'][0]
    assert sched_after['_global_step'] == sched_before['_global_step'] + 1
    # Training went on from the saved weights, not from a new init.
    records = _scalars(work_dir)
    iters = [r['step'] for r in records if 'loss' in r]
    assert iters[-ITERS_PER_EPOCH:] == [5, 6]


def test_resume_from_explicit_path(first_run, tool, tiny_cfg, tiny_options,
                                   tmp_path):
    work_dir, _ = first_run
    proc = tool(['train.py', tiny_cfg, '--work-dir', tmp_path, '--resume',
                 work_dir / 'epoch_1.pth', '--cfg-options',
                 *tiny_options])
    assert 'resumed epoch: 1, iter: 2' in proc.stdout + proc.stderr
    assert _load(tmp_path / 'epoch_2.pth')['meta']['iter'] == 4
    assert not (tmp_path / 'epoch_1.pth').exists()


def test_load_from_starts_a_new_run_from_the_weights(first_run, tool,
                                                     tiny_cfg, tiny_options,
                                                     tmp_path):
    work_dir, _ = first_run
    source = _load(work_dir / 'epoch_2.pth')
    # lr 0: the weights of the new run stay what load_from gave it.
    tool(['train.py', tiny_cfg, '--work-dir', tmp_path, '--cfg-options',
          f'load_from={work_dir / "epoch_2.pth"}', 'train_cfg.max_epochs=1',
          'optim_wrapper.optimizer.lr=0.0', *tiny_options])
    new = _load(tmp_path / 'epoch_1.pth')
    assert new['meta']['epoch'] == 1 and new['meta']['iter'] == 2
    src, dst = _params(source), _params(new)
    assert src.keys() == dst.keys()
    for k in src:
        torch.testing.assert_close(dst[k], src[k], rtol=0, atol=0, msg=k)


def test_num_workers_zero_and_two_both_train(tool, tiny_cfg, tiny_options,
                                             tmp_path):
    # mmpretrain's train.py forces persistent_workers=True, which torch
    # rejects for num_workers=0; workers > 0 keep persistent workers.
    tool(['train.py', tiny_cfg, '--work-dir', tmp_path,
          '--cfg-options', 'train_cfg.max_epochs=1',
          'train_dataloader.num_workers=2', *tiny_options])
    assert (tmp_path / 'epoch_1.pth').is_file()
