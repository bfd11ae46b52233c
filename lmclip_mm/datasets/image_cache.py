# Copyright (c) lmclip_mm authors.
"""An exact, shared, crash-safe cache of preprocessed images.

A dataset whose pipeline starts with a deterministic
:class:`~lmclip_mm.datasets.transforms.LoadResizedImage` keeps that
transform's output (the decoded and resized uint8 image and its original
size) in a memory-mapped file and serves it from there; the random flip and
everything after it run as before. What a cached image is:

* **exact**: the bytes the transform produced, copied back;
* **never stale**: each slot records the image file's size, modification
  time (ns) and inode; every read compares them with a fresh ``os.stat`` of
  the file and decodes the file instead when they differ. The store itself
  is named by a hash of the transform's parameters (and pillow's version)
  and of the list file's image paths: another size, filter or list is
  another store;
* **shared**: one file mapped by every loader worker (one copy in the page
  cache), by every rank and by consecutive runs and tuning trials;
  concurrent fills split the work in chunks under ``flock`` locks, so no two
  processes decode the same image;
* **crash-safe**: a slot's record is written only after its pixels reached
  the file (``msync``), and it carries a CRC; a fill killed at any moment
  leaves slots without a valid record, which are decoded again.

Layout of a store (a folder under the cache root)::

    meta.json    format version, transform parameters, image count, shape
    paths.txt    the absolute image paths, one per slot
    pixels.u8    N x 3 x H x W uint8, channel-first (sparse until filled)
    index.bin    N records of RECORD_SIZE bytes
    locks/       one lock file per chunk of CHUNK slots

The cache root is ``cache_dir`` if given, else ``$LMCLIP_CACHE_DIR``, else
``$XDG_CACHE_HOME/lmclip_mm/images`` (``~/.cache/lmclip_mm/images``).
Deleting a store's folder (or the root) clears it; it is rebuilt on use.
"""
import fcntl
import hashlib
import json
import mmap
import os
import os.path as osp
import shutil
import struct
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import (Future, ProcessPoolExecutor,
                                ThreadPoolExecutor, as_completed)
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: bumped when the layout or the meaning of a store changes
FORMAT_VERSION = 1
#: slots per lock (and per msync of the pixels)
CHUNK = 64
MAGIC = 0x314D434C  # b'LCM1'
# magic, ori_h, ori_w, pad, size, mtime_ns, inode | crc32 of those, pad
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


def pack_record(ori_shape: Tuple[int, int], key: Tuple[int, int,
                                                       int]) -> bytes:
    body = _RECORD.pack(MAGIC, ori_shape[0], ori_shape[1], 0, *key)
    return body + struct.pack('<II', zlib.crc32(body), 0)


def unpack_record(raw: bytes) -> Optional[Tuple[Tuple[int, int], Tuple]]:
    """``((ori_h, ori_w), file key)`` of a valid record, else None."""
    body = raw[:_RECORD.size]
    magic, h, w, _, size, mtime, ino = _RECORD.unpack(body)
    if magic != MAGIC:
        return None
    (crc, ) = struct.unpack_from('<I', raw, _RECORD.size)
    if crc != zlib.crc32(body):
        return None
    return (h, w), (size, mtime, ino)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """The CPUs this process may use, shared with the other ranks of this
    machine (``LOCAL_WORLD_SIZE``), at most 16."""
    local = int(os.environ.get('LOCAL_WORLD_SIZE', '1') or 1)
    return max(1, min(16, cpu_count() // max(1, local)))


#: fill with forked processes (Linux); elsewhere with threads
USE_PROCESSES = sys.platform.startswith('linux')
#: the store a fill process fills (set in the process by ``_pool``)
_WORKER_CACHE: Optional['ImageCache'] = None


def _init_process(cache: 'ImageCache') -> None:
    global _WORKER_CACHE
    _WORKER_CACHE = cache
    try:  # die with the filling process (Linux: PR_SET_PDEATHSIG)
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _fill_chunk_in_process(chunk: int, slots: List[int], wait: bool):
    return _WORKER_CACHE._fill_chunk(chunk, slots, wait)


class _Inline:
    """An executor that runs each call at once, in this thread."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        fut = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001  re-raised by result()
            fut.set_exception(e)
        return fut


def _pool(cache: 'ImageCache', workers: int):
    """``(executor, fill_chunk)`` for ``workers`` workers."""
    if workers == 1:
        return _Inline(), cache._fill_chunk
    if USE_PROCESSES:
        import multiprocessing
        return ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context('fork'),
            initializer=_init_process,
            initargs=(cache, )), _fill_chunk_in_process
    return ThreadPoolExecutor(workers), cache._fill_chunk


class CacheUnavailable(OSError):
    """The cache folder cannot be created or written."""


class ImageCache:
    """One store: the cached outputs of ``loader`` for ``paths``.

    Args:
        paths (Sequence[str]): the image files, one slot each (absolute
            paths are taken).
        loader: the transform whose output is cached: it has
            ``cache_key() -> dict``, ``scale`` (width, height) and
            ``decode(bytes) -> (img, (ori_h, ori_w))``.
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

    # ---- filling
    def fill(self,
             slots: Optional[Sequence[int]] = None,
             workers: Optional[int] = None,
             on_progress: Optional[Callable[[int], None]] = None) -> dict:
        """Decode every slot of ``slots`` (default: all) that has no valid
        record, with ``workers`` workers (default :func:`default_workers`):
        forked processes on Linux (:data:`USE_PROCESSES`: pillow's
        Python-level work holds the GIL), threads elsewhere; one worker
        decodes in this thread.

        Processes that fill the same store at once (ranks, workers of a
        tuning study) take chunks of :data:`CHUNK` slots under a lock each;
        a chunk locked by another process is waited for afterwards and then
        only what it left undone is decoded. ``on_progress(n)`` is called
        (from this thread) as slots are done.

        Returns:
            dict: ``computed`` (slots decoded here), ``reused`` (valid
            already or filled by another process), ``failed`` (a list of
            ``(slot, exception)``: files that could not be read or decoded;
            their slots stay invalid), ``missing`` (slots still without a
            valid image: failed, changed while read, or a read-only
            store), ``seconds``.
        """
        start = time.perf_counter()
        slots = range(len(self.paths)) if slots is None else slots
        slots = sorted(set(slots))
        todo: Dict[int, List[int]] = {}
        for s in slots:
            if not self.valid(s):
                todo.setdefault(s // CHUNK, []).append(s)
        missing = sum(len(v) for v in todo.values())
        report = dict(computed=0, reused=len(slots) - missing, failed=[],
                      missing=missing, seconds=0.0)
        if not todo or not self.writable:
            report['seconds'] = time.perf_counter() - start
            return report
        workers = max(1, min(workers or default_workers(), len(todo)))
        executor, fill_chunk = _pool(self, workers)
        with executor as pool:
            # first pass: the chunks no other process is filling; then the
            # others, waiting for their lock (a killed filler releases it
            # and leaves its chunk undone)
            busy = []
            for wait, chunks in ((False, sorted(todo)), (True, busy)):
                futures = {pool.submit(fill_chunk, c, todo[c], wait): c
                           for c in chunks}
                for fut in as_completed(futures):
                    done = fut.result()
                    if done is None:
                        busy.append(futures[fut])
                    else:
                        self._account(report, done, on_progress)
        report['missing'] = missing - report['computed'] - (
            report['reused'] - (len(slots) - missing))
        report['seconds'] = time.perf_counter() - start
        return report

    @staticmethod
    def _account(report, done, on_progress):
        computed, reused, failed = done
        report['computed'] += computed
        report['reused'] += reused
        report['failed'] += failed
        if on_progress is not None:
            on_progress(computed + reused + len(failed))

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
        pixels, index = self._maps()
        todo = [s for s in slots if not self.valid(s)]
        reused = len(slots) - len(todo)
        done, failed = [], []
        for s in todo:
            self._write_record(s, _INVALID)  # 1. none while pixels change
        for s in todo:
            try:
                with open(self.paths[s], 'rb') as f:
                    before = file_key(os.fstat(f.fileno()))
                    data = f.read()
                img, ori_shape = self.loader.decode(data)
                if file_key(os.stat(self.paths[s])) != before:
                    continue  # changed while read: leave it to a later fill
            except Exception as e:  # noqa: BLE001  reported by the caller
                failed.append((s, e))
                continue
            if img.shape != self.shape or img.dtype != np.uint8:
                failed.append((s, ValueError(
                    f'the transform gave {img.dtype} {img.shape}, the '
                    f'cache holds uint8 {self.shape}')))
                continue
            self._write_pixels(s, img)  # 2. the pixels
            done.append((s, ori_shape, before))
        if done:
            pixels.flush()  # pixels on disk before any record names them
            for s, ori_shape, key in done:
                self._write_record(s, pack_record(ori_shape, key))  # 3.
            index.flush()
        return len(done), reused, failed

    def _write_pixels(self, slot: int, img: np.ndarray) -> None:
        off = slot * self.slot_bytes
        self._maps()[0][off:off + self.slot_bytes] = img.transpose(
            2, 0, 1).tobytes()

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


def fill_with_progress(cache: ImageCache,
                       slots: Sequence[int],
                       workers: Optional[int] = None) -> dict:
    """:meth:`ImageCache.fill` with a log line before and after and a
    progress bar (on rank 0) while it decodes."""
    from mmengine.dist import get_rank
    from mmengine.logging import print_log
    from mmengine.utils import ProgressBar

    slots = sorted(set(int(s) for s in slots))
    todo = len(slots) - cache.count_valid(slots)
    if todo == 0:
        print_log(f'image cache: {len(slots)} images from {cache.dir}',
                  logger='current')
        return dict(computed=0, reused=len(slots), failed=[], missing=0,
                    seconds=0.0)
    if not cache.writable:
        print_log(f'image cache: {cache.dir} is read-only; {todo} of its '
                  f'{len(slots)} images are decoded on every use',
                  logger='current', level=30)
        return cache.fill(slots, workers)
    workers = workers or default_workers()
    print_log(f'image cache: decoding {todo} of {len(slots)} images into '
              f'{cache.dir} ({workers} worker{"s" * (workers > 1)})',
              logger='current')
    bar = ProgressBar(todo, file=sys.stdout) if get_rank() == 0 else None
    shown = [0]

    def on_progress(n):
        n = min(n, todo - shown[0])  # slots filled by others count too
        shown[0] += n
        if bar is not None and n:
            bar.update(n)

    report = cache.fill(slots, workers, on_progress)
    if bar is not None:
        bar.file.write('\n')
        bar.file.flush()
    rate = report['computed'] / max(report['seconds'], 1e-9)
    print_log(
        f'image cache: {report["computed"]} images decoded in '
        f'{report["seconds"]:.1f} s ({rate:.0f} images/s), '
        f'{report["reused"]} already cached; {cache.dir} now holds '
        f'{cache.disk_usage() / 2**20:.0f} MiB', logger='current')
    return report
