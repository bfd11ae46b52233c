# Copyright (c) lmclip_mm authors.
"""Storage backends (importing this package registers them in mmengine's
fileio, ``mmengine.fileio.register_backend``) and checkpoint safety
(:mod:`.checkpoint_safety`)."""
from . import checkpoint_safety  # noqa: F401
from .atomic_local_backend import (AtomicLocalBackend, atomic_write_bytes,
                                   atomic_write_text, remove_stale_temp_files)

__all__ = [
    'AtomicLocalBackend', 'atomic_write_bytes', 'atomic_write_text',
    'remove_stale_temp_files'
]
