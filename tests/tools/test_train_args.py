"""tools/train.py's CLI-to-config merging (in-process)."""
from lmclip_testing import REPO
from mmengine.config import Config


def _train_module():
    from lmclip_tools import train
    return train


def test_amp_keeps_the_divergence_guard():
    train = _train_module()
    cfg = Config.fromfile(str(REPO / 'configs' / 'lmclip_toy_mlt_tiny.py'))
    assert cfg.optim_wrapper.type == 'SafeOptimWrapper'
    args = train.parse_args(['x.py', '--amp'])
    cfg = train.merge_args(cfg, args)
    assert cfg.optim_wrapper.type == 'SafeAmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    plain = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD'))))
    plain = train.merge_args(plain, args)
    assert plain.optim_wrapper.type == 'AmpOptimWrapper'


def test_resume_and_work_dir_semantics():
    train = _train_module()
    cfg = train.merge_args(Config(dict(optim_wrapper=dict())),
                           train.parse_args(['configs/a_b.py', '--resume']))
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.work_dir.endswith('work_dirs/a_b')
    cfg = train.merge_args(
        Config(dict(optim_wrapper=dict())),
        train.parse_args(['a.py', '--resume', 'x.pth', '--work-dir', 'w']))
    assert cfg.resume is True and cfg.load_from == 'x.pth'
    assert cfg.work_dir == 'w'


def test_cfg_options_num_workers_zero_disables_persistent_workers():
    """``--cfg-options train_dataloader.num_workers=0`` on a paper config
    (4 workers) gives a dataloader torch accepts: persistent_workers is
    decided after --cfg-options is merged."""
    import torch.utils.data as tud
    train = _train_module()
    cfg = Config.fromfile(str(REPO / 'configs' / 'lmclip_coco_mlt_vitb16.py'))
    assert cfg.train_dataloader.num_workers > 0
    args = train.parse_args([
        'x.py', '--cfg-options', 'train_dataloader.num_workers=0',
        'val_dataloader.num_workers=0'
    ])
    cfg = train.merge_args(cfg, args)
    for field in ('train_dataloader', 'val_dataloader'):
        loader = cfg[field]
        assert loader.num_workers == 0
        assert loader.persistent_workers is False, field
        # what torch itself says about these two settings
        tud.DataLoader(list(range(4)), num_workers=loader.num_workers,
                       persistent_workers=loader.persistent_workers)
    # with workers the mmpretrain default (persistent) still applies
    cfg = train.merge_args(
        Config.fromfile(str(REPO / 'configs' / 'lmclip_coco_mlt_vitb16.py')),
        train.parse_args(['x.py']))
    assert cfg.train_dataloader.persistent_workers is True
