"""The quickstart's lr schedule follows train_cfg.max_epochs (issue 15,
item 12): the schedulers are built by mmengine's runner from the toy config
after --cfg-options, then stepped as ParamSchedulerHook steps them."""
import math
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / 'configs' / 'lmclip_toy_mlt_tiny.py'
LR = 2e-3


def _lrs(max_epochs, root, work_dir):
    """lr of each epoch (the epoch-based cosine steps after each epoch),
    and after the last one."""
    import lmclip_mm  # noqa: F401
    from mmengine.runner import Runner
    cfg = Config.fromfile(str(TOY))
    cfg.merge_from_dict({'train_cfg.max_epochs': max_epochs,
                         'work_dir': str(work_dir)})
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
def test_cosine_anneals_to_zero_at_max_epochs(max_epochs, tmp_path):
    starts, final = _lrs(max_epochs, tmp_path / 'toy', tmp_path / 'work')
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
