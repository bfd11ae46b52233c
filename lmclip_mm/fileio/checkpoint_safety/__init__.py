# Copyright (c) lmclip_mm authors.
"""Checkpoint safety: everything that keeps checkpoints from running code
or being half-written, in one place.

* **loading** (:mod:`.loading`, :mod:`.allowlist`, :mod:`.trust`): mmengine
  checkpoints load weights-only with a per-thread allow-list; a file needs
  the user's trust to be unpickled in full (below);
* **writing**: checkpoints are written atomically (temp file, fsync,
  rename) by the ``atomic_local`` storage backend
  (:class:`~lmclip_mm.fileio.AtomicLocalBackend`) that
  :class:`~lmclip_mm.engine.hooks.AtomicCheckpointHook` uses;
* **the tools** trust the files named with ``--trust-checkpoint``
  (``lmclip_tools.launch.trust_from_cli``), and the CLIP weights files of
  a model load under :func:`weights_only_guard`
  (``lmclip_mm.models.utils``).

Safe checkpoint loading for mmengine on torch>=2.6, without global state.

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
from .allowlist import MMENGINE_SAFE_GLOBALS
from .loading import (UntrustedCheckpointError, install, safe_torch_load,
                      weights_only_guard)
from .trust import (TRUSTED_CHECKPOINTS_ENV, is_trusted, trust_checkpoint,
                    untrust_all)

__all__ = [
    'UntrustedCheckpointError', 'MMENGINE_SAFE_GLOBALS', 'install',
    'trust_checkpoint', 'untrust_all', 'is_trusted', 'safe_torch_load',
    'weights_only_guard', 'TRUSTED_CHECKPOINTS_ENV'
]
