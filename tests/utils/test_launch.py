import pytest
import torch
from mmengine.config import Config

from lmclip_mm.utils import launch


def _cfg():
    return Config(
        dict(
            train_dataloader=dict(batch_size=2, num_workers=0),
            val_dataloader=dict(batch_size=2, num_workers=2),
            test_dataloader=None))


def test_persistent_workers_only_with_workers():
    cfg = _cfg()
    launch.set_dataloader_defaults(cfg)
    assert cfg.train_dataloader.persistent_workers is False
    assert 'persistent_workers' not in cfg.val_dataloader
    assert cfg.train_dataloader.collate_fn == dict(type='default_collate')
    assert cfg.test_dataloader is None
    cfg = _cfg()
    cfg.train_dataloader.num_workers = 2
    launch.set_dataloader_defaults(cfg)
    assert cfg.train_dataloader.persistent_workers is True
    cfg = _cfg()
    cfg.train_dataloader.num_workers = 2
    launch.set_dataloader_defaults(cfg, persistent_workers=False)
    assert cfg.train_dataloader.persistent_workers is False


def test_pin_memory_follows_cuda_and_flag():
    cfg = _cfg()
    launch.set_dataloader_defaults(cfg)
    assert cfg.train_dataloader.pin_memory is launch.cuda_usable()
    cfg = _cfg()
    launch.set_dataloader_defaults(cfg, pin_memory=False)
    assert cfg.val_dataloader.pin_memory is False


def test_explicit_config_values_win():
    cfg = _cfg()
    cfg.train_dataloader.collate_fn = dict(type='pseudo_collate')
    launch.set_dataloader_defaults(cfg)
    assert cfg.train_dataloader.collate_fn == dict(type='pseudo_collate')


@pytest.mark.skipif(launch.cuda_usable(), reason='CPU-only behaviour')
def test_cpu_wrapper_selection():
    assert launch._cpu_wrapper_cfg(None).type == launch.CPU_WRAPPER
    cfg = launch._cpu_wrapper_cfg(
        Config(dict(w=dict(type='MMDistributedDataParallel',
                           find_unused_parameters=True))).w)
    assert cfg.type == launch.CPU_WRAPPER and cfg.find_unused_parameters
    custom = Config(dict(w=dict(type='MyWrapper'))).w
    assert launch._cpu_wrapper_cfg(custom).type == 'MyWrapper'
    assert launch.init_distributed('none', Config()) is None
    with pytest.raises(RuntimeError, match='--launcher pytorch'):
        launch.init_distributed('slurm', Config())


def test_device_agnostic_ddp_is_registered_under_the_root_lookup():
    # mmengine's Runner.wrap_model uses MODEL_WRAPPERS.get on the root.
    import lmclip_mm  # noqa: F401
    from mmengine.registry import MODEL_WRAPPERS
    from lmclip_mm.models.wrappers import DeviceAgnosticDDP
    assert MODEL_WRAPPERS.get(launch.CPU_WRAPPER) is DeviceAgnosticDDP


def test_trust_from_cli_includes_clip_weights_file(tmp_path):
    from lmclip_mm.utils import checkpoint as ckpt_utils
    weights = tmp_path / 'w.pt'
    weights.write_bytes(b'x')
    ckpt_utils.untrust_all()
    try:
        cfg = Config(dict(model=dict(clip=dict(pretrained=str(weights)))))
        launch.trust_from_cli([None], cfg)
        assert ckpt_utils.is_trusted(weights)
        ckpt_utils.untrust_all()
        tag = Config(dict(model=dict(clip=dict(pretrained='openai'))))
        launch.trust_from_cli([str(tmp_path / 'a.pth')], tag)
        assert ckpt_utils.is_trusted(tmp_path / 'a.pth')
        assert not ckpt_utils.is_trusted(weights)
    finally:
        ckpt_utils.untrust_all()
