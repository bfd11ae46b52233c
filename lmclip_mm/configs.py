# Copyright (c) lmclip_mm authors.
"""Where this package's configs are, for configs and tools elsewhere.

The configs (``configs/`` of the repository) and the model index ship inside
the package, in ``lmclip_mm/.mim/`` as OpenMMLab packages ship theirs (in a
clone, ``lmclip_mm/.mim`` links to the repository's files), so an installed
``lmclip_mm`` has them without a clone::

    python -m lmclip_mm configs                        # the configs folder
    python -m lmclip_mm configs lmclip_voc_mlt_vitb16  # one config's path

A config of your project inherits one with mmengine's environment
variables, which MMPretrain's own ``tools/train.py`` resolves too::

    # export LMCLIP_MM_CONFIGS=$(python -m lmclip_mm configs)
    _base_ = ['{{$LMCLIP_MM_CONFIGS:configs}}/lmclip_voc_mlt_vitb16.py']
"""
import difflib
import os
import os.path as osp
from typing import List

__all__ = ['MIM_DIR', 'config_dir', 'config_path', 'config_names']

#: the package's OpenMMLab-style data folder: configs/, model-index.yml
MIM_DIR = osp.join(osp.dirname(osp.abspath(__file__)), '.mim')


def config_dir() -> str:
    """The folder of this package's configs (its real path)."""
    path = osp.realpath(osp.join(MIM_DIR, 'configs'))
    if not osp.isdir(path):
        raise FileNotFoundError(
            f'lmclip_mm ships no configs at {osp.join(MIM_DIR, "configs")}: '
            'reinstall lmclip_mm (pip install of the repository or its '
            'wheel)')
    return path


def config_names() -> List[str]:
    """The top-level configs' names (file names without ``.py``)."""
    return sorted(f[:-3] for f in os.listdir(config_dir())
                  if f.endswith('.py') and not f.startswith('_'))


def config_path(name: str) -> str:
    """The path of a config of this package: a name
    (``'lmclip_voc_mlt_vitb16'``, with or without ``.py``) or a path inside
    the configs folder (``'examples/lmclip_own_list_files.py'``)."""
    rel = name if name.endswith('.py') else name + '.py'
    path = osp.join(config_dir(), rel)
    if not osp.isfile(path):
        close = difflib.get_close_matches(name[:-3] if name.endswith('.py')
                                          else name, config_names(), n=3)
        hint = f' Did you mean {close}?' if close else ''
        raise FileNotFoundError(
            f'no config {name!r} in {config_dir()}.{hint} Its configs: '
            f'{config_names()}')
    return path
