"""Safe checkpoint loading for mmengine on torch>=2.6, without global state.

mmengine 0.10.x calls ``torch.load`` without ``weights_only``. Since torch
2.6 that means ``weights_only=True``, and torch then refuses mmengine's own
checkpoints (``Unsupported global: mmengine.logging.history_buffer.
HistoryBuffer``), so ``--resume``, ``load_from`` and
``init_cfg=dict(type='Pretrained')`` all fail. Worse, mmengine's HTTP path
goes through ``torch.hub.load_state_dict_from_url``, which passes
``weights_only=False`` explicitly and would run any code a downloaded pickle
carries.

:func:`install` (called when :mod:`lmclip_mm` is imported) replaces every
scheme registered in mmengine's :class:`~mmengine.runner.CheckpointLoader`
(local files, ``http(s)://``, ``s3://``/``petrel://``, ``pavi://``,
``torchvision://``, ``open-mmlab://``, ``mmcls://``, and any other) by a
loader that

* passes ``weights_only`` **explicitly** to the one ``torch.load`` that
  reads the file: ``True`` unless the user trusts that very file. The local
  scheme calls ``torch.load(path, weights_only=...)``; ``http(s)://`` (and
  the schemes that resolve to a URL) downloads into torch hub's cache as
  mmengine does and loads with ``torch.hub.load_state_dict_from_url(...,
  weights_only=...)``; ``s3://``/``petrel://`` and any scheme we do not know
  read the bytes through :mod:`mmengine.fileio` and ``torch.load`` them from
  memory. No environment variable is set, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_
  LOAD`` (which torch only honours when ``weights_only`` is not passed)
  cannot turn the check off, and nothing changes for other ``torch.load``
  calls in the process;
* allow-lists exactly the few globals an mmengine/mmpretrain checkpoint
  contains (:data:`MMENGINE_SAFE_GLOBALS`): mmengine's ``HistoryBuffer``,
  numpy arrays/dtypes/scalars, and a *restricted* ``getattr`` that only
  resolves ``HistoryBuffer``'s statistics methods (a wholesale ``getattr``
  would let a file reach any attribute of any allowed object).

Thread safety. torch's only API for extra weights-only globals,
``torch.serialization.add_safe_globals`` / ``safe_globals(...)``, is
process-global: it edits ``torch._weights_only_unpickler.
_marked_safe_globals_set``, so while one thread's load ran inside
``safe_globals`` every other thread's weights-only load accepted those
globals too. We never call it. Instead, :func:`install` wraps torch's lookup
of the user-allowed globals (``torch._weights_only_unpickler.
_get_user_allowed_globals``, read by the unpickler at every GLOBAL / REDUCE /
NEWOBJ / BUILD) once; the wrapper returns torch's own answer unchanged and
adds :data:`MMENGINE_SAFE_GLOBALS` only for the thread that is inside one of
our guarded loads (a :class:`threading.local` depth). A concurrent
``torch.load`` in any other thread therefore behaves exactly as without the
plugin, and globals users add with ``add_safe_globals`` keep applying to
every load, ours included.

A checkpoint that needs anything else (e.g. a pickle that runs code on
load) is refused with :class:`UntrustedCheckpointError`, which names the
file, the offending global, and the ways to opt in, all per file:
``--trust-checkpoint`` in lmclip_mm's tools, :func:`trust_checkpoint` in
Python, and, for tools we do not own (mmpretrain's ``tools/test.py``,
``analysis_tools``, ...), the environment variable
``LMCLIP_TRUSTED_CHECKPOINTS``: an ``os.pathsep``-separated list of files,
directories (every file under them) or URLs (matched verbatim), read at
each load. Values that would trust everything (``*``, ``/``, ``1``,
``true``, ...) are ignored with a warning: nothing turns ``weights_only``
off globally. torch's own ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` still forces
weights-only loading, trusted files included.
"""
import contextlib
import functools
import io
import logging
import os
import os.path as osp
import pickle
import re
import threading
import warnings
from typing import Callable, Dict, Iterator, List, Set

import numpy as np
import torch

__all__ = [
    'UntrustedCheckpointError', 'MMENGINE_SAFE_GLOBALS', 'install',
    'trust_checkpoint', 'untrust_all', 'is_trusted', 'safe_torch_load',
    'weights_only_guard', 'TRUSTED_CHECKPOINTS_ENV'
]

#: Environment variable naming trusted checkpoints for tools we do not own.
TRUSTED_CHECKPOINTS_ENV = 'LMCLIP_TRUSTED_CHECKPOINTS'

_TRUSTED: Set[str] = set()
_TRUST_LOCK = threading.Lock()
_WARNED: Set[str] = set()
_LOCAL = threading.local()
_HOOK_LOCK = threading.Lock()
_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')
_URL = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z][A-Za-z0-9+.-]*:)?//')
_SWITCH_WORDS = frozenset(
    ['1', '0', 'true', 'false', 'yes', 'no', 'y', 'n', 'on', 'off', 'all',
     'any', 'none', 'everything'])


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

# ---------------------------------------------------------------------------
# Per-thread allow-list


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


# ---------------------------------------------------------------------------
# Trust


def _key(path) -> str:
    return osp.realpath(osp.expanduser(os.fspath(path)))


def _is_url(path: str) -> bool:
    return _URL.match(path) is not None


def trust_checkpoint(path) -> None:
    """Allow full (code-executing) unpickling of ``path``.

    ``path`` may be a file, or a directory whose files (recursively) are all
    trusted, e.g. a work_dir for ``--resume`` with an automatic checkpoint,
    or a URL (trusted verbatim). Only call this for files you created or
    otherwise trust: unpickling can run arbitrary code.
    """
    entry = path if isinstance(path, str) and _is_url(path) else _key(path)
    with _TRUST_LOCK:
        _TRUSTED.add(entry)


def untrust_all() -> None:
    """Forget every path passed to :func:`trust_checkpoint`."""
    with _TRUST_LOCK:
        _TRUSTED.clear()


def _split_env(value: str) -> List[str]:
    """Split on ``os.pathsep``, keeping ``scheme://host:port/...`` whole."""
    parts = value.split(os.pathsep)
    if os.pathsep != ':':
        return parts
    out, i = [], 0
    scheme = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*')
    while i < len(parts):
        # 'scheme', '//host...' or 'cluster', 's3', '//bucket...' (mmengine's
        # 'cluster:s3://' form) are one URL.
        n = 0
        while (n < 2 and i + n < len(parts)
               and scheme.fullmatch(parts[i + n].strip())):
            n += 1
            if i + n < len(parts) and parts[i + n].startswith('//'):
                break
        if n and i + n < len(parts) and parts[i + n].startswith('//'):
            host = parts[i + n]
            part = ':'.join([p.strip() for p in parts[i:i + n]] + [host])
            i += n + 1
            # a port: only right after the host (no '/' after '//' yet).
            if ('/' not in host[2:] and i < len(parts)
                    and re.match(r'\d+(/|$)', parts[i])):
                part = f'{part}:{parts[i]}'
                i += 1
        else:
            part = parts[i]
            i += 1
        out.append(part)
    return out


def _blanket(entry: str) -> str:
    """Why ``entry`` would trust (nearly) everything, or ``''``."""
    if entry.lower() in _SWITCH_WORDS:
        return 'it is a switch, not a path'
    if any(c in entry for c in '*?['):
        return 'wildcards are not supported'
    if _is_url(entry):
        return ''
    key = _key(entry)
    if osp.dirname(key) == key:
        return 'it is the root directory'
    return ''


def _env_entries() -> List[str]:
    """The valid entries of ``LMCLIP_TRUSTED_CHECKPOINTS``, read now."""
    value = os.environ.get(TRUSTED_CHECKPOINTS_ENV, '')
    entries = []
    for entry in _split_env(value):
        entry = entry.strip()
        if not entry:
            continue
        reason = _blanket(entry)
        if reason:
            if entry not in _WARNED:
                _WARNED.add(entry)
                warnings.warn(
                    f'Ignoring {entry!r} in {TRUSTED_CHECKPOINTS_ENV}: '
                    f'{reason}. List the checkpoint files, directories or '
                    'URLs you trust (separated by '
                    f'{os.pathsep!r}); nothing turns weights-only loading '
                    'off for every file.',
                    UserWarning,
                    stacklevel=3)
            continue
        entries.append(entry if _is_url(entry) else _key(entry))
    return entries


def is_trusted(path) -> bool:
    """Whether ``path`` was trusted by :func:`trust_checkpoint` or env."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    with _TRUST_LOCK:
        trusted = set(_TRUSTED)
    trusted.update(_env_entries())
    if isinstance(path, str) and path in trusted:
        return True
    if isinstance(path, str) and _is_url(path):
        return False
    key = _key(path)
    return any(
        key == t or key.startswith(t.rstrip(os.sep) + os.sep)
        for t in trusted if not _is_url(t))


# ---------------------------------------------------------------------------
# The guard


def _unpickler_reason(message: str) -> str:
    """The line of torch's long weights-only message that says why."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for marker in ('GLOBAL', 'getattr(', 'reduce for', 'Unsupported'):
        for line in lines:
            if marker in line:
                return line
    return lines[-1] if lines else message


def _refusal(source, error: BaseException) -> UntrustedCheckpointError:
    source = os.fspath(source) if isinstance(source, os.PathLike) else source
    env_value = source if not isinstance(source, str) or _is_url(source) \
        else osp.abspath(osp.expanduser(source))
    detail = _unpickler_reason(str(error))
    return UntrustedCheckpointError(
        f'Refusing to load checkpoint "{source}": it contains objects '
        'outside the weights-only allow-list, so unpickling it could run '
        f'code from the file ({detail.strip()}). If you created this file '
        'or otherwise trust it, opt in for this file only: pass '
        '--trust-checkpoint to lmclip_mm\'s tools/train.py, tools/test.py '
        'or tools/infer.py; with other tools (e.g. mmpretrain\'s '
        f'tools/test.py or analysis_tools) set {TRUSTED_CHECKPOINTS_ENV}='
        f'{env_value} (files, directories or URLs, separated by '
        f'"{os.pathsep}"); in Python call '
        'lmclip_mm.utils.checkpoint.trust_checkpoint(path) first. '
        '(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD does not turn this check off.)')


@contextlib.contextmanager
def weights_only_guard(source, trusted: bool = False) -> Iterator[None]:
    """:data:`MMENGINE_SAFE_GLOBALS` allowed for this thread's loads inside.

    Loads inside must pass ``weights_only`` to ``torch.load`` explicitly
    (``not trusted``): the guard sets no process-wide switch. Errors from
    torch's restricted unpickler are re-raised as
    :class:`UntrustedCheckpointError` naming ``source`` (unless
    ``trusted``).
    """
    try:
        with _allowlisted():
            yield
    except pickle.UnpicklingError as e:
        if trusted or isinstance(e, UntrustedCheckpointError):
            raise
        raise _refusal(source, e) from e


def safe_torch_load(path, map_location=None, trusted=None):
    """``torch.load(path, weights_only=not trusted)`` under the guard."""
    if trusted is None:
        trusted = is_trusted(path)
    with weights_only_guard(path, trusted=trusted):
        return torch.load(path, map_location=map_location,
                          weights_only=not trusted)


# ---------------------------------------------------------------------------
# mmengine's schemes, each with an explicit weights_only


def _load_local(filename, map_location=None, *, trusted):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location,
                      weights_only=not trusted)


def _load_http(filename,
               map_location=None,
               model_dir=None,
               progress=os.isatty(0),
               *,
               trusted):
    """mmengine's ``load_from_http`` (rank 0 downloads first), explicit."""
    from mmengine.dist import get_dist_info
    trusted = trusted or is_trusted(filename)

    def load():
        # Downloads into torch hub's cache (model_dir or
        # <hub_dir>/checkpoints) unless there already, then torch.load.
        return torch.hub.load_state_dict_from_url(
            filename,
            model_dir=model_dir,
            map_location=map_location,
            progress=progress,
            weights_only=not trusted)

    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = load()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = load()
    return checkpoint


def _load_pavi(filename, map_location=None, *, trusted):
    from tempfile import TemporaryDirectory
    assert filename.startswith('pavi://'), \
        f'Expected filename startswith `pavi://`, but get {filename}'
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            'Please install pavi to load checkpoint from modelcloud.')
    model = modelcloud.get(filename[7:])
    with TemporaryDirectory() as tmp_dir:
        downloaded_file = osp.join(tmp_dir, model.name)
        model.download(downloaded_file)
        return torch.load(downloaded_file, map_location=map_location,
                          weights_only=not trusted)


def _load_bytes(filename, map_location=None, backend=None, *, trusted):
    """Any storage :mod:`mmengine.fileio` reads (``s3://``, ...)."""
    from mmengine.fileio import get_file_backend
    backend_args = {'backend': backend} if backend else None
    data = get_file_backend(filename, backend_args=backend_args).get(filename)
    with io.BytesIO(data) as buffer:
        return torch.load(buffer, map_location=map_location,
                          weights_only=not trusted)


def _load_ceph(filename, map_location=None, backend='petrel', *, trusted):
    return _load_bytes(filename, map_location, backend, trusted=trusted)


def _load_torchvision(filename, map_location=None, *, trusted):
    from mmengine.logging import print_log
    from mmengine.runner.checkpoint import get_torchvision_models
    model_urls = get_torchvision_models()
    if filename.startswith('modelzoo://'):
        print_log(
            'The URL scheme of "modelzoo://" is deprecated, please '
            'use "torchvision://" instead',
            logger='current',
            level=logging.WARNING)
        model_name = filename[11:]
    else:
        model_name = filename[14:]
    return _load_http(
        model_urls[model_name], map_location=map_location, trusted=trusted)


def _load_openmmlab(filename, map_location=None, *, trusted):
    from mmengine.logging import print_log
    from mmengine.runner.checkpoint import (_get_mmengine_home,
                                            get_deprecated_model_names,
                                            get_external_models)
    model_urls = get_external_models()
    prefix_str = 'open-mmlab://'
    if filename.startswith(prefix_str):
        model_name = filename[13:]
    else:
        model_name = filename[12:]
        prefix_str = 'openmmlab://'
    deprecated_urls = get_deprecated_model_names()
    if model_name in deprecated_urls:
        print_log(
            f'{prefix_str}{model_name} is deprecated in favor '
            f'of {prefix_str}{deprecated_urls[model_name]}',
            logger='current',
            level=logging.WARNING)
        model_name = deprecated_urls[model_name]
    model_url = model_urls[model_name]
    if model_url.startswith(('http://', 'https://')):
        return _load_http(model_url, map_location=map_location,
                          trusted=trusted)
    path = osp.join(_get_mmengine_home(), model_url)
    return _load_local(path, map_location, trusted=trusted or is_trusted(path))


def _load_mmcls(filename, map_location=None, *, trusted):
    from mmengine.runner.checkpoint import (_process_mmcls_checkpoint,
                                            get_mmcls_models)
    checkpoint = _load_http(
        get_mmcls_models()[filename[8:]],
        map_location=map_location,
        trusted=trusted)
    return _process_mmcls_checkpoint(checkpoint)


def _explicit_loaders() -> Dict[Callable, Callable]:
    """mmengine's own scheme loaders -> ours with explicit weights_only."""
    from mmengine.runner import checkpoint as mm
    pairs = [('load_from_local', _load_local), ('load_from_http', _load_http),
             ('load_from_pavi', _load_pavi), ('load_from_ceph', _load_ceph),
             ('load_from_torchvision', _load_torchvision),
             ('load_from_openmmlab', _load_openmmlab),
             ('load_from_mmcls', _load_mmcls)]
    return {
        getattr(mm, name): ours
        for name, ours in pairs if hasattr(mm, name)
    }


def _guard_loader(loader: Callable, explicit: Callable = None) -> Callable:
    """``loader``'s scheme with an explicit ``weights_only`` per load.

    ``explicit`` re-implements ``loader`` (one of mmengine's) passing
    ``weights_only``; a loader we do not know is used as is for trusted
    files only, other files are read through :mod:`mmengine.fileio`.
    """
    if getattr(loader, '_lmclip_guarded', False):
        return loader

    @functools.wraps(loader)
    def guarded(filename, map_location=None, *args, **kwargs):
        trusted = is_trusted(filename)
        if explicit is None and trusted:
            return loader(filename, map_location, *args, **kwargs)
        impl = explicit if explicit is not None else _load_bytes
        with weights_only_guard(filename, trusted=trusted):
            return impl(filename, map_location, *args, trusted=trusted,
                        **kwargs)

    guarded._lmclip_guarded = True
    guarded._lmclip_explicit = explicit
    return guarded


def install() -> None:
    """Wrap every scheme of mmengine's ``CheckpointLoader`` (idempotent)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    _install_thread_local_allowlist()
    explicit = _explicit_loaders()
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        CheckpointLoader.register_scheme(
            prefix, _guard_loader(loader, explicit.get(loader)), force=True)
