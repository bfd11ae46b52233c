# Copyright (c) lmclip_mm authors.
"""mmengine's Runner with the two fixes every launcher needs on 0.10.x."""
import datetime
import logging
from copy import deepcopy
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner, find_latest_checkpoint
from mmpretrain.registry import RUNNERS
from mmpretrain.utils import get_ori_model

from .formatted_config import FormattedConfig

#: the DDP wrapper of CPU processes (the scope prefix is needed: mmengine
#: looks wrappers up in its root registry)
CPU_WRAPPER = 'mmpretrain.DeviceAgnosticDDP'
DATALOADER_FIELDS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def cuda_usable() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def fix_dataloaders(cfg: Config, fields=DATALOADER_FIELDS) -> None:
    """No ``persistent_workers`` without workers (torch raises
    ``ValueError``; MMPretrain's ``tools/train.py`` defaults it to True),
    no ``pin_memory`` without CUDA (useless, and it warns per worker)."""
    for field in fields:
        loader = cfg.get(field, None)
        if loader is None:
            continue
        if loader.get('num_workers', 0) == 0 and \
                loader.get('persistent_workers'):
            loader['persistent_workers'] = False
        if loader.get('pin_memory') and not cuda_usable():
            loader['pin_memory'] = False


def cpu_wrapper_cfg(wrapper_cfg: Optional[dict]) -> ConfigDict:
    """``model_wrapper_cfg`` for CPU processes: mmengine's default DDP
    wrapper becomes :class:`~lmclip_mm.models.wrappers.DeviceAgnosticDDP`
    (other wrappers are kept)."""
    if wrapper_cfg is None:
        return ConfigDict(type=CPU_WRAPPER)
    wrapper_type = wrapper_cfg.get('type', 'MMDistributedDataParallel')
    if wrapper_type in ('MMDistributedDataParallel',
                        'mmengine.MMDistributedDataParallel'):
        wrapper_cfg = deepcopy(wrapper_cfg)
        wrapper_cfg['type'] = CPU_WRAPPER
    return ConfigDict(wrapper_cfg)


def init_cpu_distributed(cfg: Config) -> Optional[str]:
    """Multi-process runs on machines without GPUs: mmengine's ``pytorch``
    launcher calls ``torch.cuda.set_device`` unconditionally and its runner
    passes ``device_ids`` to DDP. Without CUDA, this initialises the gloo
    process group itself (mmengine then skips its own) and selects
    :data:`CPU_WRAPPER`. Returns ``'gloo'`` when it did, None otherwise
    (GPUs, or no launcher: mmengine's path, untouched)."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or cuda_usable():
        return None
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} without GPUs is not supported; on a CPU '
            'machine use --launcher pytorch (tools/dist_train.sh, torchrun).')
    cfg.model_wrapper_cfg = cpu_wrapper_cfg(cfg.get('model_wrapper_cfg'))
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    env_cfg.setdefault('dist_cfg', ConfigDict())['backend'] = 'gloo'
    if not torch_dist.is_initialized():
        dist_cfg = dict(env_cfg['dist_cfg'])
        dist_cfg.pop('backend', None)
        timeout = dist_cfg.pop('timeout', None)
        if timeout is not None:
            dist_cfg['timeout'] = datetime.timedelta(seconds=timeout)
        torch_dist.init_process_group(backend='gloo', **dist_cfg)
    return 'gloo'


class _Rename(logging.Filter):
    """Replaces ``old`` by ``new`` in the messages of a logger."""

    def __init__(self, old: str, new: str):
        super().__init__()
        self.old, self.new = old, new

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and self.old in record.msg:
            record.msg = record.msg.replace(self.old, self.new)
        return True


@RUNNERS.register_module()
class LMCLIPRunner(Runner):
    """:class:`~mmengine.runner.Runner` that also runs where mmengine 0.10
    does not: dataloaders without workers under MMPretrain's tools (no
    ``persistent_workers``), and ``--launcher pytorch`` on machines without
    GPUs (gloo, :class:`~lmclip_mm.models.wrappers.DeviceAgnosticDDP`).
    Elsewhere it is mmengine's Runner unchanged.

    The configs of this project name it (``_base_/default_runtime.py``)::

        runner_type = 'mmpretrain.LMCLIPRunner'

    so MMPretrain's own ``tools/train.py`` / ``tools/test.py`` and ``mim``
    (which build ``RUNNERS.build(cfg)`` when a config has ``runner_type``)
    get the same fixes as this project's tools. The scope prefix is needed:
    those tools build it from mmengine's root registry.

    When it resumes a checkpoint, the model's pretrained weights are not
    loaded first (a model with ``skip_pretrained_weights(reason)``, as
    :class:`~lmclip_mm.models.LMCLIPClassifier`, is told so): the
    checkpoint replaces them. With ``load_from`` alone they are loaded (the
    checkpoint may hold only some of the weights).

    Its config (``runner.cfg``) is a :class:`FormattedConfig`: the text it
    logs, dumps and writes into every checkpoint's meta is mmengine's, byte
    for byte, formatted once instead of once per checkpoint.
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> 'LMCLIPRunner':
        cfg = FormattedConfig.of(cfg)  # a copy, formatted once per text
        fix_dataloaders(cfg)
        init_cpu_distributed(cfg)
        return super().from_cfg(cfg)

    def _log_env(self, env_cfg: dict) -> None:
        """mmengine's environment log, without its misleading lines: on a
        machine without GPUs "GPU number" (the world size) reads "Processes
        (no GPU)", and a run of one process says that ``dist_cfg`` (e.g.
        MMPretrain's default nccl) is not used."""
        renames = []
        if not cuda_usable():
            renames.append(_Rename('GPU number: ', 'Processes (no GPU): '))
        if not self._distributed:
            renames.append(_Rename('dist_cfg: ',
                                   'dist_cfg (not used, one process): '))
        for rename in renames:
            self.logger.addFilter(rename)
        try:
            super()._log_env(env_cfg)
        finally:
            for rename in renames:
                self.logger.removeFilter(rename)

    def resume_checkpoint(self) -> Optional[str]:
        """The checkpoint :meth:`load_or_resume` will resume, if any (its
        rule: ``resume`` with ``load_from``, else the work dir's latest)."""
        if self._has_loaded or not self._resume:
            return None
        if self._load_from is not None:
            return self._load_from
        return find_latest_checkpoint(self.work_dir)

    def _init_model_weights(self) -> None:
        resume_from = self.resume_checkpoint()
        skip = getattr(get_ori_model(self.model), 'skip_pretrained_weights',
                       None)
        if resume_from is not None and callable(skip):
            skip(f'resuming {resume_from}')
        super()._init_model_weights()
