"""The quickstart's lr schedule follows train_cfg.max_epochs (issue 15,
item 12): the config is merged by tools/train.py's merge_args, the
schedulers are built by mmengine's runner, then stepped as
ParamSchedulerHook steps them."""
import math
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / 'configs' / 'lmclip_toy_mlt_tiny.py'
LR = 2e-3


def _train_tool():
    from lmclip_tools import train
    return train


def _lrs(max_epochs, root, work_dir):
    """lr of each epoch (the epoch-based cosine steps after each epoch),
    and after the last one."""
    import lmclip_mm  # noqa: F401
    from mmengine.runner import Runner
    train = _train_tool()
    args = train.parse_args([str(TOY), '--work-dir', str(work_dir),
                             '--cfg-options',
                             f'train_cfg.max_epochs={max_epochs}'])
    cfg = train.merge_args(Config.fromfile(str(TOY)), args)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = str(root)
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    runner = Runner.from_cfg(cfg)
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    schedulers = runner.build_param_scheduler(cfg.param_scheduler)
    epoch_len = len(runner.train_dataloader)
    optimizer = runner.optim_wrapper.optimizer
    starts = []
    for _ in range(max_epochs):
        starts.append(optimizer.param_groups[0]['lr'])
        for _ in range(epoch_len):
            for s in schedulers:
                if not s.by_epoch:
                    s.step()
        for s in schedulers:
            if s.by_epoch:
                s.step()
    return starts, optimizer.param_groups[0]['lr']


@pytest.mark.parametrize('max_epochs', [10, 30])
def test_cosine_anneals_to_zero_at_max_epochs(max_epochs, tmp_path,
                                              capsys):
    starts, final = _lrs(max_epochs, tmp_path / 'toy', tmp_path / 'work')
    note = ('note: param_scheduler[1] (CosineAnnealingLR): end 30 -> 10, '
            'T_max 28 -> 8 to follow train_cfg.max_epochs=10')
    assert (note in capsys.readouterr().out) == (max_epochs == 10)
    # warm-up (2 epochs), then cosine over the remaining max_epochs - 2: it
    # reaches eta_min=0 at epoch max_epochs, so the last epoch's lr is the
    # schedule's smallest (as in the paper's per-epoch cosine). With the
    # 30-epoch schedule kept (T_max=28), epoch 10 would still train at
    # 85 % of the lr.
    t_max = max_epochs - 2
    for epoch in range(2, max_epochs):
        t = epoch - 2
        expected = LR * (1 + math.cos(math.pi * t / t_max)) / 2
        assert starts[epoch] == pytest.approx(expected, rel=1e-6), epoch
    assert starts[2] == pytest.approx(LR)
    assert starts[-1] < 0.04 * LR and final == starts[-1]


def test_short_runs_keep_the_warm_up_only(tmp_path):
    starts, final = _lrs(2, tmp_path / 'toy', tmp_path / 'work')
    assert starts[0] == pytest.approx(0.1 * LR)
    assert final == pytest.approx(LR)  # warm-up done, cosine never starts


def test_follow_max_epochs_rules():
    from lmclip_tools.launch import follow_max_epochs
    base = [dict(type='LinearLR', begin=0, end=2, by_epoch=True),
            dict(type='CosineAnnealingLR', begin=2, end=30, T_max=28),
            dict(type='StepLR', begin=0, end=30, by_epoch=False),
            dict(type='CosineAnnealingLR', begin=0, end=30, T_max=50)]

    def run(new_max, edit=None):
        cfg = Config(dict(train_cfg=dict(max_epochs=30),
                          param_scheduler=[dict(x) for x in base]))
        old = [dict(x) for x in base]
        cfg.merge_from_dict({'train_cfg.max_epochs': new_max, **(edit or {})})
        notes = follow_max_epochs(cfg, 30, old)
        return notes, cfg.param_scheduler

    notes, scheds = run(10)
    assert notes == [
        'param_scheduler[1] (CosineAnnealingLR): end 30 -> 10, T_max 28 -> '
        '8 to follow train_cfg.max_epochs=10',
        'param_scheduler[3] (CosineAnnealingLR): end 30 -> 10 to follow '
        'train_cfg.max_epochs=10']
    assert scheds[0] == base[0] and scheds[2] == base[2]  # iteration-based
    assert scheds[3]['T_max'] == 50  # a T_max of its own stays
    # a scheduler the user set in --cfg-options is left alone
    notes, scheds = run(10, {'param_scheduler.1.end': 12})
    assert scheds[1]['end'] == 12 and scheds[1]['T_max'] == 28
    assert len(notes) == 1
    # one that would start at or after the last epoch never acts
    notes, scheds = run(2)
    assert scheds[1]['end'] == 30 and scheds[3]['end'] == 2
    assert run(30)[0] == []
    # a single scheduler dict
    cfg = Config(dict(train_cfg=dict(max_epochs=50), param_scheduler=dict(
        type='CosineAnnealingLR', T_max=50, begin=0, end=50)))
    cfg.merge_from_dict({'train_cfg.max_epochs': 5})
    assert follow_max_epochs(cfg, 50, dict(
        type='CosineAnnealingLR', T_max=50, begin=0, end=50)) == [
        'param_scheduler (CosineAnnealingLR): end 50 -> 5, T_max 50 -> 5 to '
        'follow train_cfg.max_epochs=5']
