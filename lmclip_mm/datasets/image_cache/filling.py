# Copyright (c) lmclip_mm authors.
"""Filling a store: chunks under file locks, decoded by forked processes
(Linux) or threads, with a progress bar."""
import os
import sys
import time
from concurrent.futures import (ProcessPoolExecutor, ThreadPoolExecutor,
                                as_completed)
from typing import Callable, Dict, List, Optional, Sequence

from .store import CHUNK, ImageCache


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
_WORKER_CACHE: Optional[ImageCache] = None


def _init_process(cache: ImageCache) -> None:
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


def _pool(cache: ImageCache, workers: int):
    """``(executor, fill_chunk)`` for ``workers`` workers."""
    if USE_PROCESSES and workers > 1:
        import multiprocessing
        return ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context('fork'),
            initializer=_init_process,
            initargs=(cache, )), _fill_chunk_in_process
    return ThreadPoolExecutor(workers), cache._fill_chunk


def fill(cache: ImageCache,
         slots: Optional[Sequence[int]] = None,
         workers: Optional[int] = None,
         on_progress: Optional[Callable[[int], None]] = None) -> dict:
    """Decode every slot of ``slots`` (default: all) that has no valid
    record, with ``workers`` workers (default :func:`default_workers`):
    forked processes on Linux (:data:`USE_PROCESSES`: pillow's
    Python-level work holds the GIL), threads elsewhere and for one
    worker.

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
    slots = range(len(cache.paths)) if slots is None else slots
    slots = sorted(set(slots))
    todo: Dict[int, List[int]] = {}
    for s in slots:
        if not cache.verified(s):
            todo.setdefault(s // CHUNK, []).append(s)
    missing = sum(len(v) for v in todo.values())
    report = dict(computed=0, reused=len(slots) - missing, failed=[],
                  missing=missing, seconds=0.0)
    if not todo or not cache.writable:
        report['seconds'] = time.perf_counter() - start
        return report
    workers = max(1, min(workers or default_workers(), len(todo)))
    executor, fill_chunk = _pool(cache, workers)
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
                    _account(report, done, on_progress)
    report['missing'] = missing - report['computed'] - (
        report['reused'] - (len(slots) - missing))
    report['seconds'] = time.perf_counter() - start
    return report


def _account(report, done, on_progress):
    computed, reused, failed = done
    report['computed'] += computed
    report['reused'] += reused
    report['failed'] += failed
    if on_progress is not None:
        on_progress(computed + reused + len(failed))


def fill_with_progress(cache: ImageCache,
                       slots: Sequence[int],
                       workers: Optional[int] = None) -> dict:
    """:func:`fill` with a log line before and after and a
    progress bar (on rank 0) while it decodes."""
    from mmengine.dist import get_rank
    from mmengine.logging import print_log
    from mmengine.utils import ProgressBar

    slots = sorted(set(int(s) for s in slots))
    todo_slots = [s for s in slots if not cache.verified(s)]
    todo = len(todo_slots)
    if todo == 0:
        print_log(f'image cache: {len(slots)} images from {cache.dir}',
                  logger='current')
        return dict(computed=0, reused=len(slots), failed=[], missing=0,
                    seconds=0.0)
    if not cache.writable:
        print_log(f'image cache: {cache.dir} is read-only; {todo} of its '
                  f'{len(slots)} images are decoded on every use',
                  logger='current', level=30)
        report = fill(cache, todo_slots, workers)
        report['reused'] += len(slots) - todo
        return report
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

    report = fill(cache, todo_slots, workers, on_progress)
    report['reused'] += len(slots) - todo
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
