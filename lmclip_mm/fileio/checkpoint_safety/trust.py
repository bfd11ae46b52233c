# Copyright (c) lmclip_mm authors.
"""Which checkpoint files may be unpickled in full: those a user trusts
(:func:`trust_checkpoint`, ``--trust-checkpoint``,
``$LMCLIP_TRUSTED_CHECKPOINTS``)."""
import os
import os.path as osp
import re
import threading
import warnings
from typing import List, Set

#: Environment variable naming trusted checkpoints for tools we do not own.
TRUSTED_CHECKPOINTS_ENV = 'LMCLIP_TRUSTED_CHECKPOINTS'

_TRUSTED: Set[str] = set()
_TRUST_LOCK = threading.Lock()
_WARNED: Set[str] = set()
_URL = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z][A-Za-z0-9+.-]*:)?//')
_SWITCH_WORDS = frozenset(
    ['1', '0', 'true', 'false', 'yes', 'no', 'y', 'n', 'on', 'off', 'all',
     'any', 'none', 'everything'])


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
