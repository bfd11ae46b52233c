# Copyright (c) lmclip_mm authors.
"""Loading under the guard: every scheme of mmengine's ``CheckpointLoader``
with an explicit ``weights_only`` (see the package's docstring)."""
import contextlib
import functools
import io
import logging
import os
import os.path as osp
import pickle
from typing import Callable, Dict, Iterator

import torch

from .allowlist import _allowlisted, _install_thread_local_allowlist
from .trust import TRUSTED_CHECKPOINTS_ENV, _is_url, is_trusted


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs globals outside the weights-only allow-list."""


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
        'lmclip_mm.fileio.checkpoint_safety.trust_checkpoint(path) first. '
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
