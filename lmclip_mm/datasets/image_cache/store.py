# Copyright (c) lmclip_mm authors.
"""The store of the image cache: one folder of memory-mapped files per list
file and transform (see :mod:`lmclip_mm.datasets.image_cache`)."""
import fcntl
import hashlib
import json
import mmap
import os
import os.path as osp
import shutil
import struct
import tempfile
import threading
import time
import zlib
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

FORMAT_VERSION = 2
#: slots per lock
CHUNK = 64
MAGIC = 0x314D434C  # b'LCM1'
# magic, ori_h, ori_w, crc32 of the pixels, size, mtime_ns, inode | crc32 of
# those, pad
_RECORD = struct.Struct('<IIIIQqQ')
RECORD_SIZE = 48
_INVALID = bytes(RECORD_SIZE)

ENV_DIR = 'LMCLIP_CACHE_DIR'


def default_cache_root() -> str:
    """``$LMCLIP_CACHE_DIR``, else ``$XDG_CACHE_HOME/lmclip_mm/images``
    (``~/.cache/lmclip_mm/images``)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return osp.abspath(osp.expanduser(env))
    base = os.environ.get('XDG_CACHE_HOME') or osp.join(
        osp.expanduser('~'), '.cache')
    return osp.join(base, 'lmclip_mm', 'images')


def file_key(st: os.stat_result) -> Tuple[int, int, int]:
    """What a slot's validity depends on: size, mtime (ns), inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def pack_record(ori_shape: Tuple[int, int], key: Tuple[int, int, int],
                pixels_crc: int) -> bytes:
    body = _RECORD.pack(MAGIC, ori_shape[0], ori_shape[1], pixels_crc, *key)
    return body + struct.pack('<II', zlib.crc32(body), 0)


def unpack_record(raw: bytes) -> Optional[Tuple[Tuple[int, int], Tuple,
                                                int]]:
    """``((ori_h, ori_w), file key, pixels crc32)`` of a whole record, else
    None."""
    body = raw[:_RECORD.size]
    magic, h, w, pixels_crc, size, mtime, ino = _RECORD.unpack(body)
    if magic != MAGIC:
        return None
    (crc, ) = struct.unpack_from('<I', raw, _RECORD.size)
    if crc != zlib.crc32(body):
        return None
    return (h, w), (size, mtime, ino), pixels_crc


class CacheUnavailable(OSError):
    """The cache folder cannot be created or written."""


class ImageCache:
    """One store: the cached outputs of ``loader`` for ``paths``.

    Args:
        paths (Sequence[str]): the image files, one slot each (absolute
            paths are taken).
        loader: the transform whose output is cached: it has
            ``cache_key() -> dict``, ``scale`` (width, height) and
            ``decode_chw(bytes) -> (channel-first pixels, (ori_h, ori_w))``.
        root (str, optional): the cache root (see :func:`default_cache_root`).
        label (str): a readable prefix of the store's folder name.

    Raises:
        CacheUnavailable: the store neither exists nor can be created.
    """

    def __init__(self, paths: Sequence[str], loader, root: Optional[str] =
                 None, label: str = 'images'):
        self.paths = [osp.abspath(p) for p in paths]
        self.loader = loader
        self.root = osp.abspath(osp.expanduser(root)) if root else \
            default_cache_root()
        w, h = loader.scale
        self.shape = (h, w, 3)
        self.slot_bytes = h * w * 3
        key = dict(format=FORMAT_VERSION, transform=loader.cache_key(),
                   shape=list(self.shape), count=len(self.paths))
        digest = hashlib.sha256(
            json.dumps(key, sort_keys=True).encode() + b'\n' +
            '\n'.join(self.paths).encode('utf-8', 'surrogateescape'))
        safe = ''.join(c if c.isalnum() or c in '-_.' else '_'
                       for c in label)
        self.dir = osp.join(self.root,
                            f'{safe}-{w}x{h}-{digest.hexdigest()[:16]}')
        self._key = key
        self.created = False
        self._open_or_create()
        self._mm = None
        self._map_lock = threading.Lock()

    # ---- store files
    @property
    def nbytes(self) -> int:
        """The store's size once every slot is filled."""
        return len(self.paths) * (self.slot_bytes + RECORD_SIZE)

    def _open_or_create(self) -> None:
        if not osp.isfile(osp.join(self.dir, 'meta.json')):
            self._create()
        with open(osp.join(self.dir, 'meta.json'), encoding='utf-8') as f:
            meta = json.load(f)
        with open(osp.join(self.dir, 'paths.txt'), encoding='utf-8',
                  errors='surrogateescape') as f:
            paths = f.read().split('\n')
        if meta.get('key') != self._key or paths != self.paths:
            raise CacheUnavailable(
                f'image cache {self.dir}: its meta.json / paths.txt do not '
                'match this dataset (a damaged store); delete the folder')
        self.writable = os.access(osp.join(self.dir, 'pixels.u8'), os.W_OK) \
            and os.access(osp.join(self.dir, 'index.bin'), os.W_OK)

    def _create(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix='.tmp-' + osp.basename(self.dir),
                                   dir=self.root)
        except OSError as e:
            raise CacheUnavailable(
                f'image cache: cannot create {self.root} ({e.strerror})'
            ) from e
        try:
            os.chmod(tmp, 0o755)
            with open(osp.join(tmp, 'paths.txt'), 'w', encoding='utf-8',
                      errors='surrogateescape') as f:
                f.write('\n'.join(self.paths))
            for name, size in (('pixels.u8',
                                len(self.paths) * self.slot_bytes),
                               ('index.bin', len(self.paths) * RECORD_SIZE)):
                with open(osp.join(tmp, name), 'wb') as f:
                    f.truncate(size)  # sparse: zeros = no valid record
            os.mkdir(osp.join(tmp, 'locks'))
            with open(osp.join(tmp, 'meta.json'), 'w',
                      encoding='utf-8') as f:
                json.dump(dict(key=self._key, created=time.strftime(
                    '%Y-%m-%d %H:%M:%S')), f, indent=1)
            try:
                os.rename(tmp, self.dir)  # atomic; fails if it exists
                self.created = True
            except OSError:
                if not osp.isfile(osp.join(self.dir, 'meta.json')):
                    raise
        except OSError as e:
            raise CacheUnavailable(
                f'image cache: cannot create {self.dir} ({e})') from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _maps(self):
        """``(pixels, index)``: shared mmaps of the store's files (a forked
        loader worker uses its parent's; an unpickled copy maps anew)."""
        if self._mm is not None:
            return self._mm
        with self._map_lock:
            if self._mm is None:
                access = mmap.ACCESS_WRITE if self.writable else \
                    mmap.ACCESS_READ
                maps = []
                for name in ('pixels.u8', 'index.bin'):
                    mode = 'r+b' if self.writable else 'rb'
                    with open(osp.join(self.dir, name), mode) as f:
                        maps.append(mmap.mmap(f.fileno(), 0, access=access))
                self._mm = tuple(maps)
            return self._mm

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_mm'] = None
        state['_map_lock'] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._map_lock = threading.Lock()

    # ---- reading
    def record(self, slot: int) -> bytes:
        index = self._maps()[1]
        return index[slot * RECORD_SIZE:(slot + 1) * RECORD_SIZE]

    def get(self, slot: int
            ) -> Optional[Tuple[np.ndarray, Tuple[int, int]]]:
        """``(img, ori_shape)`` of slot ``slot`` if its record is valid and
        matches its file as it is now; else None (decode the file).

        ``img`` has the transform's values and (H, W, 3) shape; its memory
        is channel-first (the store's layout), so that ``PackInputs`` turns
        it into a (3, H, W) tensor without a transposing copy."""
        try:
            key = file_key(os.stat(self.paths[slot]))
        except OSError:
            return None
        pixels, index = self._maps()
        start = slot * RECORD_SIZE
        raw = index[start:start + RECORD_SIZE]
        rec = unpack_record(raw)
        if rec is None or rec[1] != key:
            return None
        h, w, c = self.shape
        img = np.frombuffer(
            pixels, np.uint8, self.slot_bytes,
            slot * self.slot_bytes).reshape(c, h, w).copy().transpose(1, 2, 0)
        if index[start:start + RECORD_SIZE] != raw:  # rewritten meanwhile
            return None
        return img, rec[0]

    def valid(self, slot: int) -> bool:
        """Whether ``get(slot)`` would serve the cached image now."""
        try:
            key = file_key(os.stat(self.paths[slot]))
        except OSError:
            return False
        rec = unpack_record(self.record(slot))
        return rec is not None and rec[1] == key

    def verified(self, slot: int) -> bool:
        """:meth:`valid`, and the pixels match the record's CRC32 (what a
        fill checks before it trusts a slot: pixels that a power loss kept
        from reaching the disk are decoded again)."""
        if not self.valid(slot):
            return False
        off = slot * self.slot_bytes
        pixels = memoryview(self._maps()[0])[off:off + self.slot_bytes]
        try:
            return zlib.crc32(pixels) == unpack_record(self.record(slot))[2]
        finally:
            pixels.release()

    # ---- filling
    def fill(self,
             slots: Optional[Sequence[int]] = None,
             workers: Optional[int] = None,
             on_progress: Optional[Callable[[int], None]] = None) -> dict:
        """:func:`lmclip_mm.datasets.image_cache.filling.fill` of this
        store."""
        from .filling import fill
        return fill(self, slots, workers, on_progress)

    def _fill_chunk(self, chunk: int, slots: List[int], wait: bool):
        """Fill ``slots`` of ``chunk`` under its lock. None if ``wait`` is
        False and another process holds the lock; else ``(computed, reused,
        failed)``."""
        lock_path = osp.join(self.dir, 'locks', f'{chunk:06d}')
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else
                                                 fcntl.LOCK_NB))
            except BlockingIOError:
                return None
            return self._fill_locked(slots)
        finally:
            os.close(fd)  # releases the lock, also when the process dies

    def _fill_locked(self, slots: List[int]):
        """Decode the slots of ``slots`` that are not verified. Per slot:
        (1) its record is invalidated, (2) its pixels written, (3) its record
        written, naming the file's state and the pixels' CRC32: a process
        killed at any point leaves no record over other pixels."""
        todo = [s for s in slots if not self.verified(s)]
        reused = len(slots) - len(todo)
        computed, failed = 0, []
        for s in todo:
            self._write_record(s, _INVALID)  # 1.
            try:
                with open(self.paths[s], 'rb') as f:
                    before = file_key(os.fstat(f.fileno()))
                    data = f.read()
                data, ori_shape = self.loader.decode_chw(data)
                if file_key(os.stat(self.paths[s])) != before:
                    continue  # changed while read: leave it to a later fill
            except Exception as e:  # noqa: BLE001  reported by the caller
                failed.append((s, e))
                continue
            if len(data) != self.slot_bytes:
                failed.append((s, ValueError(
                    f'the transform gave {len(data)} bytes, a slot of '
                    f'{self.shape} holds {self.slot_bytes}')))
                continue
            self._write_pixels(s, data)  # 2.
            self._write_record(s, pack_record(ori_shape, before,
                                              zlib.crc32(data)))  # 3.
            computed += 1
        return computed, reused, failed

    def _write_pixels(self, slot: int, data: bytes) -> None:
        off = slot * self.slot_bytes
        self._maps()[0][off:off + self.slot_bytes] = data

    def _write_record(self, slot: int, record: bytes) -> None:
        self._maps()[1][slot * RECORD_SIZE:(slot + 1) * RECORD_SIZE] = record

    def count_valid(self, slots: Optional[Sequence[int]] = None) -> int:
        slots = range(len(self.paths)) if slots is None else slots
        return sum(self.valid(s) for s in slots)

    def disk_usage(self) -> int:
        """Bytes the store's files occupy on disk (sparse files count their
        written blocks only)."""
        total = 0
        for name in ('pixels.u8', 'index.bin'):
            st = os.stat(osp.join(self.dir, name))
            total += getattr(st, 'st_blocks', 0) * 512 or st.st_size
        return total
