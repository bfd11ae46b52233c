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

pytestmark = pytest.mark.heavy(40)  # seconds on one CI core

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
    args = [MMPRETRAIN_TRAIN, str(TOY), '--work-dir', str(work_dir),
            '--cfg-options', 'train_cfg.max_epochs=1', *options]
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
