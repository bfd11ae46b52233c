"""LMCLIPRunner: the configs' runner gives MMPretrain's own tools what
mmengine 0.10 lacks (no persistent workers without workers, torchrun on
CPU machines), checked through MMPretrain's tools/train.py itself."""
import os.path as osp
import subprocess
import sys

import mmpretrain
import pytest
from lmclip_testing import CONFIGS, REPO, free_port, tool_env
from mmengine.config import Config, ConfigDict

from lmclip_mm.engine.runner import (CPU_WRAPPER, LMCLIPRunner,
                                     cpu_wrapper_cfg, fix_dataloaders)

pytestmark = pytest.mark.heavy(35)  # seconds on one CI core

TOY = CONFIGS / 'lmclip_toy_mlt_tiny.py'
#: MMPretrain's tools as its wheel ships them (what ``mim train`` runs)
MMPRETRAIN_TRAIN = osp.join(osp.dirname(mmpretrain.__file__), '.mim',
                            'tools', 'train.py')


def test_every_config_of_the_project_names_the_runner():
    for path in sorted(CONFIGS.glob('lmclip_*.py')):
        assert Config.fromfile(str(path)).runner_type == \
            'mmpretrain.LMCLIPRunner', path


def test_fix_dataloaders():
    cfg = Config(dict(
        train_dataloader=dict(num_workers=0, persistent_workers=True,
                              pin_memory=True),
        val_dataloader=dict(num_workers=2, persistent_workers=True),
        test_dataloader=None))
    fix_dataloaders(cfg)
    assert cfg.train_dataloader.persistent_workers is False
    assert cfg.val_dataloader.persistent_workers is True  # has workers
    import torch
    assert cfg.train_dataloader.pin_memory is torch.cuda.is_available()


def test_cpu_wrapper_keeps_other_wrappers():
    assert cpu_wrapper_cfg(None).type == CPU_WRAPPER
    assert cpu_wrapper_cfg(dict(type='MMDistributedDataParallel',
                                find_unused_parameters=True)) == \
        ConfigDict(type=CPU_WRAPPER, find_unused_parameters=True)
    cfg = cpu_wrapper_cfg(
        Config(dict(w=dict(type='MMDistributedDataParallel',
                           find_unused_parameters=True))).w)
    assert cfg.type == CPU_WRAPPER and cfg.find_unused_parameters
    assert cpu_wrapper_cfg(dict(type='MyWrapper')).type == 'MyWrapper'
    custom = Config(dict(w=dict(type='MyWrapper'))).w
    assert cpu_wrapper_cfg(custom).type == 'MyWrapper'


def test_device_agnostic_ddp_is_registered_under_the_root_lookup():
    # mmengine's Runner.wrap_model uses MODEL_WRAPPERS.get on the root.
    from mmengine.registry import MODEL_WRAPPERS

    from lmclip_mm.models.wrappers import DeviceAgnosticDDP
    assert MODEL_WRAPPERS.get(CPU_WRAPPER) is DeviceAgnosticDDP


def test_from_cfg_leaves_the_given_config_alone(tmp_path, toy_root):
    cfg = Config.fromfile(str(TOY))
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.persistent_workers = True
    cfg.train_dataloader.dataset.data_root = str(toy_root)
    runner = LMCLIPRunner.from_cfg(cfg)
    assert cfg.train_dataloader.persistent_workers is True
    assert runner.cfg.train_dataloader.persistent_workers is False


def _mmpretrain_train(toy_root, work_dir, nproc):
    options = [f'{k}.dataset.data_root={toy_root}'
               for k in ('train_dataloader', 'val_dataloader',
                         'test_dataloader')]
    # a subset of each split: the launcher path is the point, not learning
    subsets = [f'{k}.dataset.indices=32' for k in ('train_dataloader',
                                                   'val_dataloader',
                                                   'test_dataloader')]
    args = [MMPRETRAIN_TRAIN, str(TOY), '--work-dir', str(work_dir),
            '--cfg-options', 'train_cfg.max_epochs=1', *options, *subsets]
    if nproc > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run',
               f'--nproc_per_node={nproc}',
               f'--master_port={free_port()}', *args, '--launcher',
               'pytorch']
    else:
        cmd = [sys.executable, *args]
    return subprocess.run(cmd, cwd=REPO, env=tool_env(), capture_output=True,
                          text=True, timeout=600)


@pytest.mark.skipif(not osp.isfile(MMPRETRAIN_TRAIN),
                    reason="this mmpretrain wheel ships no .mim/tools")
def test_mmpretrain_train_py_runs_the_toy_config_on_two_cpu_processes(
        tmp_path, toy_root):
    """MMPretrain's own train.py defaults persistent_workers=True (the toy
    loaders have no workers) and its launcher needs CUDA: both are the
    runner's to fix, with no flag."""
    proc = _mmpretrain_train(toy_root, tmp_path / 'w', nproc=2)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "'backend': 'gloo'" in log
    assert (tmp_path / 'w' / 'epoch_1.pth').is_file()


# -- CLIP weights: loaded by init_weights when training starts ---------------
def _weights_file(path, seed):
    """A state dict of the toy config's CLIP, seeded."""
    import torch

    from lmclip_mm.models.utils import create_clip_model
    torch.manual_seed(seed)
    torch.save(create_clip_model('lmclip-tiny-rn').state_dict(), path)
    return str(path)


def _train_cfg(tmp_path, toy_root, weights, max_epochs, **extra):
    cfg = Config.fromfile(str(TOY))
    cfg.work_dir = str(tmp_path / 'work')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(toy_root)
    cfg.train_dataloader.dataset.indices = 16
    cfg.model.clip.pretrained = weights
    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = 100  # no validation
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.merge_from_dict(extra)
    return cfg


class _FirstStepWeights:
    """A hook that records the CLIP's weights before the first step of
    the run (``before_train_iter``, highest priority)."""

    def __new__(cls):
        from mmengine.hooks import Hook

        class FirstStep(Hook):
            priority = 'HIGHEST'
            seen = None

            def before_train_iter(self, runner, batch_idx, data_batch=None):
                if self.seen is None:
                    model = runner.model
                    self.seen = {k: v.clone() for k, v in
                                 model.clip.state_dict().items()}
        return FirstStep()


def _assert_equal(state, path_or_state):
    import torch
    other = torch.load(path_or_state, weights_only=True) \
        if isinstance(path_or_state, str) else path_or_state
    assert state.keys() == other.keys()
    for key in state:
        assert torch.equal(state[key], other[key]), key


def test_clip_weights_loaded_before_the_first_step_not_when_resuming(
        tmp_path, toy_root, monkeypatch):
    """Building the model reads no CLIP weights; training loads them
    (init_weights) before its first step; a resumed run does not load them
    again: its checkpoint's weights are the ones trained on."""
    import torch

    from lmclip_mm.models.classifiers import lmclip_classifier
    loads = []
    real = lmclip_classifier.load_clip_weights
    monkeypatch.setattr(lmclip_classifier, 'load_clip_weights',
                        lambda *a, **k: (loads.append(a[2]), real(*a, **k)))
    first = _weights_file(tmp_path / 'first.pt', 1)
    runner = LMCLIPRunner.from_cfg(_train_cfg(tmp_path, toy_root, first, 1))
    assert loads == []  # built, not loaded
    hook = _FirstStepWeights()
    runner.register_hook(hook)
    runner.train()
    assert loads == [first]
    _assert_equal(hook.seen, first)

    # resume: another weights file in the config; the checkpoint wins and
    # the file is not even read
    other = _weights_file(tmp_path / 'other.pt', 2)
    runner = LMCLIPRunner.from_cfg(_train_cfg(
        tmp_path, toy_root, other, 2, resume=True))
    hook = _FirstStepWeights()
    runner.register_hook(hook)
    runner.train()
    assert loads == [first]
    ckpt = torch.load(tmp_path / 'work' / 'epoch_1.pth', weights_only=False)
    _assert_equal(hook.seen, {k[len('clip.'):]: v
                              for k, v in ckpt['state_dict'].items()
                              if k.startswith('clip.')})
    log = sorted((tmp_path / 'work').glob('*/*.log'))[-1].read_text()
    assert "the '" + other + "' weights are not loaded: resuming " in log
    # the config text in a checkpoint's meta is mmengine's, byte for byte
    # (runner.cfg is a FormattedConfig: formatted once, not per checkpoint)
    from mmengine.config import Config
    last = torch.load(tmp_path / 'work' / 'epoch_2.pth', weights_only=False)
    assert type(runner.cfg).__name__ == 'FormattedConfig'
    assert last['meta']['cfg'] == Config(runner.cfg.to_dict()).pretty_text

    # load_from without resume: the weights are loaded, then the checkpoint
    runner = LMCLIPRunner.from_cfg(_train_cfg(
        tmp_path, toy_root, other, 1, load_from=str(
            tmp_path / 'work' / 'epoch_2.pth'),
        work_dir=str(tmp_path / 'work2')))
    runner.train()
    assert loads == [first, other]
