"""AtomicLocalBackend: writes are all-or-nothing, also under SIGKILL."""
import os
import signal

import pytest
from mmengine.fileio import LocalBackend, get_file_backend

from lmclip_mm.fileio import (AtomicLocalBackend, atomic_write_bytes,
                              remove_stale_temp_files)
from lmclip_mm.fileio.atomic_local_backend import TEMP_SUFFIX


def temp_files(directory):
    return [p for p in os.listdir(directory) if p.endswith(TEMP_SUFFIX)]


def test_registered_and_selected_by_backend_args(tmp_path):
    backend = get_file_backend(
        str(tmp_path / 'x.pth'), backend_args=dict(backend='atomic_local'))
    assert isinstance(backend, AtomicLocalBackend)
    assert isinstance(backend, LocalBackend)  # reads/removals unchanged


def test_put_and_put_text(tmp_path):
    backend = AtomicLocalBackend()
    target = tmp_path / 'sub' / 'dir' / 'a.bin'
    backend.put(b'\x00\x01' * 1000, str(target))
    assert target.read_bytes() == b'\x00\x01' * 1000
    backend.put(b'new', target)  # replaces
    assert backend.get(target) == b'new'
    backend.put_text('h\u00e9llo', str(tmp_path / 't.txt'))
    assert backend.get_text(str(tmp_path / 't.txt')) == 'h\u00e9llo'
    assert temp_files(tmp_path) == [] and temp_files(target.parent) == []


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        AtomicLocalBackend().put(b'x', str(tmp_path / 'f'))
    finally:
        os.umask(old)
    assert (tmp_path / 'f').stat().st_mode & 0o777 == 0o640


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / 'ckpt.pth'
    target.write_bytes(b'old complete checkpoint')

    def failing(fd, data):
        os.write(fd, data[:3])
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        atomic_write_bytes(target, b'new checkpoint', write=failing)
    assert target.read_bytes() == b'old complete checkpoint'
    assert temp_files(tmp_path) == []


def _fork_and_kill_mid_write(target, backend_cls):
    pid = os.fork()
    if pid == 0:  # child: write half, then die like a SIGKILLed trainer
        try:
            class Dying(backend_cls):

                def _write_payload(self, fd, data):
                    os.write(fd, data[:len(data) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)

                def put(self, obj, filepath):
                    if backend_cls is LocalBackend:  # mmengine's in-place
                        with open(filepath, 'wb') as f:
                            f.write(obj[:len(obj) // 2])
                            f.flush()
                            os.kill(os.getpid(), signal.SIGKILL)
                    super().put(obj, filepath)

            Dying().put(b'N' * 100_000, str(target))
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_sigkill_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / 'ckpt.pth'
    target.write_bytes(b'O' * 100_000)
    _fork_and_kill_mid_write(target, AtomicLocalBackend)
    assert target.read_bytes() == b'O' * 100_000
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1  # the killed writer's half file
    removed = remove_stale_temp_files(tmp_path)
    assert [os.path.basename(p) for p in removed] == leftovers
    assert temp_files(tmp_path) == []


def test_control_plain_local_backend_is_half_written(tmp_path):
    """What the atomic backend prevents (mmengine's LocalBackend)."""
    target = tmp_path / 'ckpt.pth'
    target.write_bytes(b'O' * 100_000)
    _fork_and_kill_mid_write(target, LocalBackend)
    assert target.read_bytes() == b'N' * 50_000


def test_stale_temp_files_of_live_processes_are_kept(tmp_path):
    live = tmp_path / f'.a.pth.{os.getpid()}.abcd{TEMP_SUFFIX}'
    live.write_bytes(b'x')
    other = tmp_path / 'unrelated.tmp'
    other.write_bytes(b'x')
    assert remove_stale_temp_files(tmp_path) == []
    assert live.exists() and other.exists()
