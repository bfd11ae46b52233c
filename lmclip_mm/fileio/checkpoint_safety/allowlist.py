# Copyright (c) lmclip_mm authors.
"""The weights-only allow-list of mmengine checkpoints, per thread."""
import contextlib
import functools
import pickle
import threading
from typing import Dict, Iterator, List

import numpy as np

_LOCAL = threading.local()
_HOOK_LOCK = threading.Lock()
_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


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


def _by_name(safe_globals) -> Dict[str, object]:
    """``{'module.qualname': global}`` as torch's unpickler looks them up."""
    named = {}
    for g in safe_globals:
        if isinstance(g, tuple):
            obj, name = g
        else:
            obj, name = g, f'{g.__module__}.{g.__qualname__}'
        named[name] = obj
    return named


_EXTRA_BY_NAME = _by_name(MMENGINE_SAFE_GLOBALS)


def _install_thread_local_allowlist() -> None:
    """Wrap torch's user-allowed-globals lookup once (behaviour-neutral).

    The wrapper returns torch's own answer, plus :data:`MMENGINE_SAFE_GLOBALS`
    (ours win on a name clash: a user's wholesale ``builtins.getattr`` must
    not replace our restricted one inside our loads) only while the calling
    thread is inside :func:`_allowlisted`.
    """
    from torch import _weights_only_unpickler as wou
    with _HOOK_LOCK:
        current = wou._get_user_allowed_globals
        if getattr(current, '_lmclip_thread_local', False):
            return

        @functools.wraps(current)
        def _get_user_allowed_globals():
            allowed = current()
            if getattr(_LOCAL, 'depth', 0) > 0:
                allowed = {**allowed, **_EXTRA_BY_NAME}
            return allowed

        _get_user_allowed_globals._lmclip_thread_local = True
        wou._get_user_allowed_globals = _get_user_allowed_globals


@contextlib.contextmanager
def _allowlisted() -> Iterator[None]:
    """:data:`MMENGINE_SAFE_GLOBALS` allowed for this thread's loads only."""
    _install_thread_local_allowlist()
    _LOCAL.depth = getattr(_LOCAL, 'depth', 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1
