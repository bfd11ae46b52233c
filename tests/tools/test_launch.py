import pytest
from mmengine.config import Config

from lmclip_tools import launch


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
def test_init_distributed_on_cpu():
    assert launch.init_distributed('none', Config()) is None
    with pytest.raises(RuntimeError, match='--launcher pytorch'):
        launch.init_distributed('slurm', Config())


def test_trust_from_cli_includes_clip_weights_file(tmp_path):
    from lmclip_mm.fileio import checkpoint_safety as ckpt_utils
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


def _build_error(cfg_dict, registry_name='MODELS'):
    """The KeyError mmengine raises for ``cfg_dict`` (nested builds wrap
    it as mmengine does)."""
    import lmclip_mm  # noqa: F401
    import mmpretrain.registry as registries
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    with pytest.raises(KeyError) as exc:
        getattr(registries, registry_name).build(cfg_dict)
    return exc.value


def test_registry_error_names_the_config_key_and_the_closest_name():
    cfg = Config(dict(model=dict(type='LMCLIPClasifier', clip=dict())))
    err = _build_error(cfg.model)
    assert launch.registry_error_message(err, cfg) == (
        "model: type 'LMCLIPClasifier' is not registered in "
        "mmpretrain::model; did you mean 'LMCLIPClassifier'?")
    # a nested type, found by searching the config; case-insensitive
    cfg = Config(dict(model=dict(type='ImageClassifier', backbone=dict(
        type='ResNet', depth=18), head=dict(
            type='MultiLabelLinearClsHead', num_classes=2, in_channels=512,
            loss=dict(type='balancedasymmetricloss')))))
    err = _build_error(cfg.model)
    assert launch.registry_error_message(err, cfg) == (
        "model.head.loss: type 'balancedasymmetricloss' is not registered in "
        "mmpretrain::model; did you mean 'BalancedAsymmetricLoss'?")
    # list items; several keys with the same bad type; another registry
    cfg = Config(dict(custom_hooks=[dict(type='DatasetMetaHook'),
                                    dict(type='ExactResumeHok')],
                      extra=dict(type='ExactResumeHok')))
    err = _build_error(cfg.custom_hooks[1], 'HOOKS')
    assert launch.registry_error_message(err, cfg) == (
        "custom_hooks[1], extra: type 'ExactResumeHok' is not registered in "
        "mmpretrain::hook; did you mean 'ExactResumeHook'?")
    # nothing close; no config known
    err = _build_error(dict(type='Zzqxv'), 'DATA_SAMPLERS')
    assert launch.registry_error_message(err) == (
        "type 'Zzqxv' is not registered in mmpretrain::data sampler (nor is "
        'any registered name close to it; is the module that registers it '
        'in custom_imports?)')
    # other KeyErrors are not registry errors
    assert launch.registry_error_message(KeyError('model')) is None


def test_run_cli_prints_a_registry_error_as_one_line(capsys, monkeypatch):
    cfg = Config(dict(model=dict(type='LMCLIPClasifier')))
    err = _build_error(cfg.model)

    def main(argv):
        with launch.config_errors(cfg):  # names the config key
            raise err

    monkeypatch.delenv('LMCLIP_TRACEBACK', raising=False)
    with pytest.raises(SystemExit) as exc:
        launch.run_cli(main)
    assert exc.value.code == 1
    assert capsys.readouterr().err == (
        "error: model: type 'LMCLIPClasifier' is not registered in "
        "mmpretrain::model; did you mean 'LMCLIPClassifier'?\n")
    monkeypatch.setenv('LMCLIP_TRACEBACK', '1')
    with pytest.raises(KeyError):
        launch.run_cli(main)

    def other(argv):
        raise KeyError('not a registry error')

    monkeypatch.delenv('LMCLIP_TRACEBACK')
    with pytest.raises(KeyError):
        launch.run_cli(other)

    def outside(argv):  # no config to name: the type and the registry only
        raise err

    with pytest.raises(SystemExit):
        launch.run_cli(outside)
    assert capsys.readouterr().err == (
        "error: type 'LMCLIPClasifier' is not registered in "
        "mmpretrain::model; did you mean 'LMCLIPClassifier'?\n")


def test_build_runner_follows_runner_type(tmp_path, toy_root):
    """The tools build the runner a config names, as MMPretrain's do."""
    from lmclip_testing import CONFIGS
    from mmengine.runner import Runner

    from lmclip_mm.engine.runner import LMCLIPRunner
    cfg = Config.fromfile(str(CONFIGS / 'lmclip_toy_mlt_tiny.py'))
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.dataset.data_root = str(toy_root)
    assert type(launch.build_runner(cfg)) is LMCLIPRunner
    cfg.pop('runner_type')
    assert type(launch.build_runner(cfg)) is Runner


def test_new_cfg_option_keys_are_checked_against_the_component():
    from mmengine.config import Config

    from lmclip_tools import launch
    cfg = Config(dict(
        model=dict(type='LMCLIPClassifier', loss=dict(
            type='BalancedAsymmetricLoss')),
        train_cfg=dict(by_epoch=True, max_epochs=2)))
    # keys the component takes, mmengine's own keys, and **kwargs
    launch.merge_cfg_options(cfg, {
        'model.loss.gamma_neg': 3.0, 'train_cfg.val_interval': 1,
        'model.loss._delete_': True, 'model.loss.type': 'AsymmetricLoss'})
    cfg = Config(dict(model=dict(loss=dict(type='BalancedAsymmetricLoss'))))
    with pytest.raises(launch.ToolError, match=r"model\.loss\.gama_neg: "
                       r"BalancedAsymmetricLoss takes no argument 'gama_neg'"
                       r"; did you mean 'gamma_neg'\?"):
        launch.merge_cfg_options(cfg, {'model.loss.gama_neg': 3.0})
    # a dict whose class is unknown: left alone
    cfg = Config(dict(custom=dict(a=1)))
    launch.merge_cfg_options(cfg, {'custom.b': 2})


def test_a_config_files_unknown_key_is_named_by_its_type_error():
    """A typo in a config file (not --cfg-options): the TypeError the
    component raises when built becomes one line with the key's place."""
    from mmengine.config import Config

    from lmclip_tools import launch
    cfg = Config(dict(train_cfg=dict(by_epoch=True, max_epoch=3),
                      model=dict(loss=[dict(type='X', max_epoch=1)])))
    err = TypeError("class `EpochBasedTrainLoop` in mmengine/runner/loops.py:"
                    " EpochBasedTrainLoop.__init__() got an unexpected "
                    "keyword argument 'max_epoch'")
    message = launch.unknown_argument_message(err, cfg)
    assert message.startswith(
        "train_cfg.max_epoch, model.loss[0].max_epoch: EpochBasedTrainLoop "
        "takes no argument 'max_epoch'; did you mean 'max_epochs'? (its "
        'arguments: runner, dataloader, max_epochs'), message
    # not the config's: left to the traceback
    assert launch.unknown_argument_message(
        TypeError("f.__init__() got an unexpected keyword argument 'zz'"),
        cfg) is None
