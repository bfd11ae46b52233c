# Copyright (c) lmclip_mm authors.
"""Runners; importing this package registers them in mmpretrain's
``RUNNERS``."""
from .formatted_config import FormattedConfig
from .lmclip_runner import (CPU_WRAPPER, LMCLIPRunner, cpu_wrapper_cfg,
                            cuda_usable, fix_dataloaders,
                            init_cpu_distributed)

__all__ = ['LMCLIPRunner', 'FormattedConfig', 'CPU_WRAPPER',
           'cpu_wrapper_cfg', 'cuda_usable', 'fix_dataloaders',
           'init_cpu_distributed']
