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
* **crash-safe**: a slot's record is written after its pixels and carries
  their CRC32 and its own; a fill killed at any moment leaves no record
  over other pixels, and the slots it did not finish are decoded again.
  A fill verifies the CRC32 of every slot it trusts, so pixels that a
  power loss kept from reaching the disk are decoded again too.

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
from .filling import (USE_PROCESSES, default_workers, fill,
                      fill_with_progress)
from .store import (CHUNK, ENV_DIR, FORMAT_VERSION, RECORD_SIZE,
                    CacheUnavailable, ImageCache, default_cache_root,
                    file_key, pack_record, unpack_record)

__all__ = [
    'ImageCache', 'CacheUnavailable', 'fill', 'fill_with_progress',
    'default_cache_root', 'default_workers', 'file_key', 'pack_record',
    'unpack_record', 'CHUNK', 'ENV_DIR', 'FORMAT_VERSION', 'RECORD_SIZE',
    'USE_PROCESSES'
]
