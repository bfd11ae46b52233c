"""Safe checkpoint loading for mmengine on torch>=2.6.

mmengine 0.10.x calls ``torch.load`` without ``weights_only``. Since torch
2.6 that means ``weights_only=True``, and torch then refuses mmengine's own
checkpoints (``Unsupported global: mmengine.logging.history_buffer.
HistoryBuffer``), so ``--resume``, ``load_from`` and
``init_cfg=dict(type='Pretrained')`` all fail. Worse, mmengine's HTTP path
goes through ``torch.hub.load_state_dict_from_url``, which passes
``weights_only=False`` explicitly and would run any code a downloaded pickle
carries.

:func:`install` (called when :mod:`lmclip_mm` is imported) wraps every
scheme registered in mmengine's :class:`~mmengine.runner.CheckpointLoader`
(local files, ``http(s)://``, ``s3://``, ``open-mmlab://``, ...) so that
each load

* runs torch's restricted ``weights_only`` unpickler, forced on with
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` for the duration of that one call (this
  also covers the explicit ``weights_only=False`` of the HTTP path), and
* allow-lists exactly the few globals an mmengine/mmpretrain checkpoint
  contains (:data:`MMENGINE_SAFE_GLOBALS`): mmengine's ``HistoryBuffer``,
  numpy arrays/dtypes/scalars, and a *restricted* ``getattr`` that only
  resolves ``HistoryBuffer``'s statistics methods (a wholesale ``getattr``
  would let a file reach any attribute of any allowed object).

A checkpoint that needs anything else (e.g. a pickle that runs a command on
load) is refused with :class:`UntrustedCheckpointError`, which names the file
and the offending global. Users who trust a file opt in per path with
:func:`trust_checkpoint` (the tools' ``--trust-checkpoint`` flag); nothing
turns ``weights_only`` off globally.
"""
import contextlib
import functools
import os
import os.path as osp
import pickle
import threading
import warnings
from typing import Callable, Iterator, List, Set

import numpy as np
import torch

__all__ = [
    'UntrustedCheckpointError', 'MMENGINE_SAFE_GLOBALS', 'install',
    'trust_checkpoint', 'untrust_all', 'is_trusted', 'safe_torch_load'
]

_FORCE = 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'
_FORCE_NO = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
_ENV_LOCK = threading.RLock()
_TRUSTED: Set[str] = set()
_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs globals outside the weights-only allow-list."""


def _history_buffer():
    from mmengine.logging.history_buffer import HistoryBuffer
    return HistoryBuffer


def _history_buffer_getattr(obj, name, *default):
    """``getattr`` limited to ``HistoryBuffer``'s statistics methods.

    mmengine pickles ``HistoryBuffer._statistics_methods`` (a dict of
    unbound methods such as ``HistoryBuffer.mean``) as
    ``getattr(HistoryBuffer, 'mean')``. This is the only use allowed.
    """
    hb = _history_buffer()
    # The built-in statistics are added to the class dict lazily (first
    # HistoryBuffer()), custom ones by ``HistoryBuffer.register_statistics``.
    allowed = set(_BUILTIN_STATISTICS) | set(hb._statistics_methods)
    if obj is hb and isinstance(name, str) and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a weights-only '
        'checkpoint (only HistoryBuffer statistics methods are)')


def _numpy_globals() -> List:
    """numpy globals of pickled arrays/scalars under both numpy 1 and 2."""
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    safe = [np.ndarray, np.dtype]
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        safe.append((multiarray._reconstruct, f'{mod}._reconstruct'))
        safe.append((multiarray.scalar, f'{mod}.scalar'))
    # numpy>=1.25 pickles some dtypes through their DType classes.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                safe.append(cls)
    return safe


def _safe_globals() -> List:
    return [_history_buffer()] + _numpy_globals() + [
        (_history_buffer_getattr, 'builtins.getattr')
    ]


#: Globals an mmengine/mmpretrain checkpoint may contain beyond torch's own.
MMENGINE_SAFE_GLOBALS = _safe_globals()


def _key(path) -> str:
    return osp.realpath(osp.expanduser(str(path)))


def trust_checkpoint(path) -> None:
    """Allow full (code-executing) unpickling of ``path``.

    ``path`` may be a file, or a directory whose files (recursively) are all
    trusted, e.g. a work_dir for ``--resume`` with an automatic checkpoint.
    Only call this for files you created or otherwise trust: unpickling can
    run arbitrary code.
    """
    if isinstance(path, str) and '://' in path:
        _TRUSTED.add(path)
    else:
        _TRUSTED.add(_key(path))


def untrust_all() -> None:
    """Forget every path passed to :func:`trust_checkpoint`."""
    _TRUSTED.clear()


def is_trusted(path) -> bool:
    if not isinstance(path, (str, os.PathLike)):
        return False
    if isinstance(path, str) and path in _TRUSTED:
        return True
    key = _key(path)
    return any(key == t or key.startswith(t.rstrip(os.sep) + os.sep)
               for t in _TRUSTED)


def _unpickler_reason(message: str) -> str:
    """The line of torch's long weights-only message that says why."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for marker in ('GLOBAL', 'getattr(', 'reduce for', 'Unsupported'):
        for line in lines:
            if marker in line:
                return line
    return lines[-1] if lines else message


@contextlib.contextmanager
def _env(values: dict) -> Iterator[None]:
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        try:
            for k, v in values.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@contextlib.contextmanager
def weights_only_guard(source, trusted: bool = False) -> Iterator[None]:
    """Every ``torch.load`` inside is weights-only with mmengine's globals.

    With ``trusted=True`` the loads inside unpickle fully instead (only for
    files the user trusts explicitly). Errors from torch's restricted
    unpickler are re-raised as :class:`UntrustedCheckpointError` naming
    ``source``.
    """
    if trusted:
        with _env({_FORCE: None, _FORCE_NO: '1'}), warnings.catch_warnings():
            warnings.filterwarnings(
                'ignore', message='Environment variable '
                'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected')
            yield
        return
    try:
        with _env({_FORCE: '1', _FORCE_NO: None}), \
                torch.serialization.safe_globals(MMENGINE_SAFE_GLOBALS):
            yield
    except pickle.UnpicklingError as e:
        if isinstance(e, UntrustedCheckpointError):
            raise
        detail = _unpickler_reason(str(e))
        raise UntrustedCheckpointError(
            f'Refusing to load checkpoint "{source}": it contains objects '
            'outside the weights-only allow-list, so unpickling it could '
            f'run code from the file ({detail.strip()}). If you created '
            'this file or otherwise trust it, pass --trust-checkpoint to '
            'tools/train.py or tools/test.py, or call '
            'lmclip_mm.utils.checkpoint.trust_checkpoint(path) first.'
        ) from e


def safe_torch_load(path, map_location=None, trusted=None):
    """``torch.load`` of ``path`` under :func:`weights_only_guard`."""
    if trusted is None:
        trusted = is_trusted(path)
    with weights_only_guard(path, trusted=trusted):
        return torch.load(path, map_location=map_location,
                          weights_only=not trusted)


def _guard_loader(loader: Callable) -> Callable:
    if getattr(loader, '_lmclip_guarded', False):
        return loader

    @functools.wraps(loader)
    def guarded(filename, map_location=None, *args, **kwargs):
        with weights_only_guard(filename, trusted=is_trusted(filename)):
            return loader(filename, map_location, *args, **kwargs)

    guarded._lmclip_guarded = True
    return guarded


def install() -> None:
    """Wrap every scheme of mmengine's ``CheckpointLoader`` (idempotent)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        CheckpointLoader.register_scheme(
            prefix, _guard_loader(loader), force=True)
