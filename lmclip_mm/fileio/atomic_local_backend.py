# Copyright (c) lmclip_mm authors.
"""A local storage backend whose writes are atomic.

mmengine's :class:`~mmengine.fileio.LocalBackend` writes with
``open(path, 'wb')``: the file is truncated first and filled afterwards, so a
process killed during a checkpoint save leaves a half-written ``.pth`` (and a
kill while the file is re-saved under the same name destroys the previous,
complete one).

:class:`AtomicLocalBackend` (registered in mmengine's fileio as
``'atomic_local'``) writes every ``put``/``put_text`` to a temporary file in
the destination's directory, ``fsync`` s it, renames it over the destination
with :func:`os.replace` (atomic on POSIX and Windows within one file system)
and ``fsync`` s the directory. A reader therefore sees either the previous
complete file or the new complete file, never a mix or a truncated one, also
after a power loss. Reads, listings and removals are :class:`LocalBackend`'s.

Select it wherever mmengine takes ``backend_args``::

    default_hooks = dict(checkpoint=dict(
        type='CheckpointHook', backend_args=dict(backend='atomic_local')))

(:class:`~lmclip_mm.engine.hooks.AtomicCheckpointHook` does this by itself
and also makes the ``last_checkpoint`` pointer write atomic, which mmengine
does not route through the backend.)

Temporary files are named ``.<name>.<pid>.<random>.lmclip-tmp`` and are
removed when a write fails with an exception; only a killed process leaves
one behind (:func:`remove_stale_temp_files` cleans them).
"""
import errno
import os
import os.path as osp
import re
import secrets
from pathlib import Path
from typing import List, Union

from mmengine.fileio import LocalBackend, register_backend
from mmengine.fileio.backends import backends

__all__ = [
    'AtomicLocalBackend', 'atomic_write_bytes', 'atomic_write_text',
    'remove_stale_temp_files', 'TEMP_SUFFIX'
]

TEMP_SUFFIX = '.lmclip-tmp'
_TEMP_RE = re.compile(r'^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+' +
                      re.escape(TEMP_SUFFIX) + '$')


def _temp_path(path: str) -> str:
    directory, name = osp.split(path)
    token = secrets.token_hex(4)
    return osp.join(directory, f'.{name}.{os.getpid()}.{token}{TEMP_SUFFIX}')


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory or '.', os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems refuse fsync on directories
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write_bytes(path: Union[str, Path], data: bytes,
                       write=_write_all) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename).

    ``write(fd, data)`` writes the payload to the temporary file's
    descriptor (a seam for tests). The directory is created if missing. The
    new file gets the usual permissions (``0o666`` minus the umask).
    """
    path = os.fspath(path)
    directory = osp.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = _temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def atomic_write_text(path: Union[str, Path], text: str,
                      encoding: str = 'utf-8', write=_write_all) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded with ``encoding``."""
    atomic_write_bytes(path, text.encode(encoding), write=write)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temp_files(directory: Union[str, Path]) -> List[str]:
    """Remove temporary files left in ``directory`` by killed writers.

    Only files named like this module's temporary files whose writing
    process no longer exists are removed. Returns the removed paths.
    """
    directory = os.fspath(directory)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _TEMP_RE.match(name)
        if match is None or _pid_alive(int(match.group('pid'))):
            continue
        path = osp.join(directory, name)
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


class AtomicLocalBackend(LocalBackend):
    """:class:`~mmengine.fileio.LocalBackend` with atomic ``put``/``put_text``.

    See the module docstring. Registered in mmengine's fileio as
    ``'atomic_local'``: ``backend_args=dict(backend='atomic_local')``.
    """

    def _write_payload(self, fd: int, data: bytes) -> None:
        """Write ``data`` to the temporary file (overridable for tests)."""
        _write_all(fd, data)

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write bytes to ``filepath`` atomically (directories created)."""
        atomic_write_bytes(filepath, obj, write=self._write_payload)

    def put_text(self,
                 obj: str,
                 filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically (directories created)."""
        atomic_write_text(
            filepath, obj, encoding=encoding, write=self._write_payload)


if backends.get('atomic_local') is None:
    register_backend('atomic_local', AtomicLocalBackend)
