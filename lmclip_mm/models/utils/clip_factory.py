"""Building open_clip models, strictly (open_clip's ``factory.py`` seam).

* :func:`create_clip_model` wraps :func:`open_clip.create_model` with strict
  errors (unknown model name, missing weights file, never a silent random
  init when weights were asked for) and also loads OpenAI's released
  TorchScript ``.pt`` files, which ``open_clip.create_model`` refuses with
  ``weights_only=True``.
* With ``load_weights=False`` it builds the architecture the weights need
  (a tag's QuickGELU and preprocessing) without reading or downloading
  them; :func:`load_clip_weights` loads them later. The LM-CLIP classifier
  does so in ``init_weights()``, as MMPretrain's models apply their
  pretrained backbones: building a model, loading a checkpoint into it
  (``get_model(name, pretrained=CKPT)``, the inferencers, ``test.py``,
  ``get_flops.py``) never needs the CLIP weights.
* Offline, a pretrained tag whose weights are not cached fails at once
  (:class:`PretrainedWeightsUnavailable`; :func:`check_clip_weights` asks
  before anything is built).
* The tiny model configs of ``lmclip_mm/model_configs`` are registered with
  open_clip when this module is imported.

The efficient forward passes of the towers are in
:mod:`~lmclip_mm.models.utils.fast_encoders`.
"""
import difflib
import logging
import os
import os.path as osp
import warnings
import zipfile
from contextlib import contextmanager
from typing import Optional

import open_clip
import torch
from open_clip.factory import get_model_config, parse_model_name
from open_clip.model import resize_pos_embed, resize_text_pos_embed
from open_clip.pretrained import (download_pretrained, get_pretrained_cfg,
                                  list_pretrained_tags_by_model)

from ...fileio.checkpoint_safety import (UntrustedCheckpointError,
                                         is_trusted, weights_only_guard)

__all__ = [
    'MODEL_CONFIG_DIR', 'register_model_configs', 'create_clip_model',
    'load_clip_weights', 'check_clip_weights', 'PretrainedWeightsUnavailable'
]

logger = logging.getLogger(__name__)

#: Directory of the open_clip model configs shipped with lmclip_mm.
MODEL_CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
    'model_configs')


def register_model_configs() -> None:
    """Register ``lmclip_mm/model_configs/*.json`` with open_clip (once)."""
    names = [f[:-5] for f in os.listdir(MODEL_CONFIG_DIR)
             if f.endswith('.json')]
    if not all(name in open_clip.list_models() for name in names):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


register_model_configs()


_RANDOM_INIT_WARNING = 'No pretrained weights loaded for model'


class _DropRandomInitWarning(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... Model initialized
    randomly." (logged with ``logging.warning``, i.e. on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_RANDOM_INIT_WARNING)


@contextmanager
def _quiet_random_init():
    root = logging.getLogger()
    drop = _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a TorchScript zip (e.g. OpenAI's CLIP ``.pt``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        # torch.save archives hold ``<name>/data.pkl``; TorchScript ones
        # also hold ``<name>/constants.pkl`` and code.
        return any(n.endswith('/constants.pkl') for n in zf.namelist())


def _load_torchscript_weights(model: torch.nn.Module, path: str) -> None:
    """Load the weights of a TorchScript CLIP archive into ``model``.

    Mirrors :func:`open_clip.factory.load_checkpoint` for OpenAI's archives
    (which ``torch.load(weights_only=True)`` refuses): the weights are taken
    from the archive's ``state_dict()`` (nothing of its code is run), with
    open_clip's own fixes (its non-weight entries dropped, ``logit_scale``
    reshaped, position embeddings resized), then loaded strictly.
    """
    with warnings.catch_warnings():  # torch>=2.10 deprecates torch.jit
        warnings.simplefilter('ignore', FutureWarning)
        archive = torch.jit.load(path, map_location='cpu')
    state_dict = dict(archive.state_dict())
    for key in ('input_resolution', 'context_length', 'vocab_size'):
        state_dict.pop(key, None)
    if 'logit_scale' in state_dict and \
            model.logit_scale.ndim != state_dict['logit_scale'].ndim:
        state_dict['logit_scale'] = state_dict['logit_scale'].reshape(
            model.logit_scale.shape)
    resize_pos_embed(state_dict, model)
    resize_text_pos_embed(state_dict, model)
    model.load_state_dict(state_dict, strict=True)


class PretrainedWeightsUnavailable(RuntimeError):
    """The weights of a pretrained tag are neither cached nor downloadable
    (no network): raised at once, before any download retry."""


#: seconds to wait for the weights' host before giving up
HUB_PROBE_TIMEOUT = 5.0


def _tag_weights_cached(tag_cfg: dict, cache_dir: Optional[str]) -> bool:
    """Whether open_clip would find the weights of a tag without network."""
    if tag_cfg.get('file'):
        return osp.isfile(tag_cfg['file'])
    hub = tag_cfg.get('hf_hub', '')
    if hub:
        from huggingface_hub import try_to_load_from_cache
        from open_clip.pretrained import (HF_WEIGHTS_NAME,
                                          _get_safe_alternatives)
        repo_id, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME
        for name in [*_get_safe_alternatives(filename), filename]:
            if isinstance(try_to_load_from_cache(repo_id, name,
                                                 cache_dir=cache_dir), str):
                return True
        return False
    url = tag_cfg.get('url', '')
    return bool(url) and osp.isfile(osp.join(
        cache_dir or osp.expanduser('~/.cache/clip'), osp.basename(url)))


def _offline_reason(tag_cfg: dict) -> Optional[str]:
    """Why the host of a tag's weights cannot be reached, or None.

    ``HF_HUB_OFFLINE=1``, or one request to the host (Hugging Face's
    endpoint, or the URL's host) that fails within
    :data:`HUB_PROBE_TIMEOUT` seconds (proxies from the environment are
    used, as for the download itself).
    """
    import urllib.error
    import urllib.parse
    import urllib.request
    if tag_cfg.get('hf_hub'):
        from huggingface_hub import constants
        offline = os.environ.get('HF_HUB_OFFLINE', '').upper() in (
            '1', 'ON', 'YES', 'TRUE') or constants.HF_HUB_OFFLINE
        if offline:
            return 'HF_HUB_OFFLINE is set'
        url = os.environ.get('HF_ENDPOINT') or constants.ENDPOINT
    else:
        url = tag_cfg.get('url', '')
        parts = urllib.parse.urlsplit(url)
        url = f'{parts.scheme}://{parts.netloc}/'
    try:
        # a fresh opener: the proxies of the environment as it is now
        urllib.request.build_opener().open(
            urllib.request.Request(url, method='HEAD'),
            timeout=HUB_PROBE_TIMEOUT).close()
    except urllib.error.HTTPError:
        return None  # the host answered
    except Exception as e:  # URLError, timeout, refused proxy, ...
        reason = getattr(e, 'reason', None) or e
        return f'{url} cannot be reached: {reason}'
    return None


def _unknown_model_error(model_name: str) -> ValueError:
    known = open_clip.list_models()
    close = difflib.get_close_matches(model_name, known, n=5, cutoff=0.5)
    hint = f' Did you mean one of {close}?' if close else ''
    return ValueError(
        f'Unknown open_clip model name {model_name!r}.{hint} Known names are '
        'given by open_clip.list_models(): the configs in open_clip\'s '
        f'model_configs/ and in {MODEL_CONFIG_DIR} (add yours with '
        'open_clip.add_model_config(path)), or use \'hf-hub:org/repo\' / '
        '\'local-dir:/path\'.')


def _weights_file(model_name: str, pretrained: str) -> str:
    """The path of a weights file given as ``pretrained`` (not a tag)."""
    path = osp.expanduser(pretrained)
    if not osp.isfile(path):
        tags = list_pretrained_tags_by_model(model_name)
        raise FileNotFoundError(
            f'pretrained weights file not found: {path!r} (nor is '
            f'{pretrained!r} a pretrained tag of {model_name}; its tags: '
            f'{tags})')
    return path


def _model_name(model_name: str) -> str:
    """open_clip's name of a model without schema (unknown: an error)."""
    name = model_name.replace('/', '-')
    if get_model_config(name) is None:
        raise _unknown_model_error(model_name)
    return name


def check_clip_weights(model_name: str, pretrained: Optional[str],
                       cache_dir: Optional[str] = None) -> None:
    """Raise now what :func:`load_clip_weights` would raise for missing
    weights: :class:`PretrainedWeightsUnavailable` for a tag neither cached
    nor downloadable (within :data:`HUB_PROBE_TIMEOUT` seconds),
    ``FileNotFoundError`` for a missing file. Cheap: nothing is built,
    downloaded or read."""
    if not pretrained or parse_model_name(model_name)[0] is not None:
        return
    name = _model_name(model_name)
    tag_cfg = get_pretrained_cfg(name, pretrained)
    if not tag_cfg:
        _weights_file(name, pretrained)
        return
    if _tag_weights_cached(tag_cfg, cache_dir):
        return
    why = _offline_reason(tag_cfg)  # fail fast: the hub would retry
    if why:
        raise PretrainedWeightsUnavailable(
            f'the {pretrained!r} weights of {name} are not in the local '
            f'cache and cannot be downloaded ({why}): run once with network '
            'access, or use a local weights file, e.g. --cfg-options '
            f'model.clip.pretrained=/path/to/{name}.pt (OpenAI\'s released '
            'file or an open_clip state dict)')


def load_clip_weights(model: torch.nn.Module,
                      model_name: str,
                      pretrained: str,
                      cache_dir: Optional[str] = None) -> None:
    """Load the weights ``pretrained`` names (a tag of ``model_name``,
    downloaded through open_clip's cache, or a weights file: a state dict
    or one of OpenAI's TorchScript archives) into ``model`` strictly, as
    :func:`open_clip.create_model` would have at creation.

    Raises:
        PretrainedWeightsUnavailable: a tag's weights are neither cached
            nor downloadable.
        FileNotFoundError: ``pretrained`` is neither a tag nor a file.
        UntrustedCheckpointError: a file needs full unpickling and is not
            trusted.
        RuntimeError: the weights could not be obtained or loaded.
    """
    name = _model_name(model_name)
    check_clip_weights(name, pretrained, cache_dir)
    tag_cfg = get_pretrained_cfg(name, pretrained)
    if tag_cfg:
        try:
            path = download_pretrained(tag_cfg, cache_dir=cache_dir)
            open_clip.load_checkpoint(model, path, strict=True,
                                      weights_only=True)
        except Exception as e:
            raise RuntimeError(
                f'Could not load the {pretrained!r} weights of {name} ({e}). '
                'Offline, they must already be in the Hugging Face hub cache '
                '(HF_HUB_OFFLINE=1); otherwise pass the path of a local '
                'weights file, e.g. OpenAI\'s ViT-B-16.pt, as pretrained.'
            ) from e
        logger.info(f'open_clip model {name}: loaded the {pretrained!r} '
                    f'weights ({path})')
        return
    path = _weights_file(name, pretrained)
    if _is_torchscript_archive(path):
        try:
            _load_torchscript_weights(model, path)
        except Exception as e:
            raise RuntimeError(f'Could not load the TorchScript CLIP weights '
                               f'{path!r} into {name}: {e}') from e
        logger.info(f'open_clip model {name}: loaded TorchScript weights '
                    f'{path}')
        return
    # Weights-only unpickling unless the user trusts this very file
    # (lmclip_mm.fileio.checkpoint_safety.trust_checkpoint /
    # --trust-checkpoint).
    trusted = is_trusted(path)
    try:
        with weights_only_guard(path, trusted=trusted):
            open_clip.load_checkpoint(model, path, strict=True,
                                      weights_only=not trusted)
    except UntrustedCheckpointError:
        raise
    except Exception as e:
        raise RuntimeError(
            f'Could not load the weights file {path!r} into {name}: {e}'
        ) from e
    logger.info(f'open_clip model {name}: loaded the weights file {path}')


def create_clip_model(model_name: str,
                      pretrained: Optional[str] = None,
                      load_weights: bool = True,
                      **kwargs) -> torch.nn.Module:
    """Create an open_clip model, strictly.

    Args:
        model_name (str): an open_clip model name (``'ViT-B-16'``,
            ``'RN50'``, ``'lmclip-tiny-vit'``, ...) or an ``hf-hub:`` /
            ``local-dir:`` identifier.
        pretrained (str, optional): None for a random init, a pretrained tag
            of the model (``'openai'``, resolved through open_clip's hub
            cache; set ``HF_HUB_OFFLINE=1`` to stay offline), or a path to a
            weights file: a plain state dict (``.pt``/``.pth``/``.bin``,
            loaded with ``weights_only=True``, or ``.safetensors``) or one of
            OpenAI's TorchScript archives (``ViT-B-16.pt``).
        load_weights (bool): load the ``pretrained`` weights now. False:
            build the architecture they need (a tag's QuickGELU and
            preprocessing; QuickGELU for a TorchScript archive) without
            downloading or reading them; load them later with
            :func:`load_clip_weights`, or a checkpoint replaces them.
            Defaults to True.
        **kwargs: passed to :func:`open_clip.create_model` (``precision``,
            ``force_quick_gelu``, ``force_image_size``, ``cache_dir``, ...).
            For weights of a tag trained with QuickGELU (OpenAI's) and for
            TorchScript archives, ``force_quick_gelu`` defaults to True so
            that, e.g., ``'ViT-B-16'`` with OpenAI weights computes what the
            weights were trained with (open_clip only warns); pass
            ``force_quick_gelu=False`` to keep the config's activation.

    Raises:
        ValueError: unknown model name.
        FileNotFoundError: ``pretrained`` is neither a tag of the model nor
            an existing file.
        PretrainedWeightsUnavailable: (``load_weights=True``) the weights of
            a tag are not cached and their host cannot be reached
            (``HF_HUB_OFFLINE=1``, no network); raised within
            :data:`HUB_PROBE_TIMEOUT` seconds.
        RuntimeError: the weights could not be obtained or loaded.
    """
    for bad in ('jit', 'require_pretrained', 'weights_only'):
        if bad in kwargs:
            raise ValueError(f'create_clip_model does not accept {bad!r}')
    schema, _ = parse_model_name(model_name)
    if schema is not None:
        if pretrained:
            raise ValueError(f'{model_name!r} brings its own weights; '
                             'pretrained must be None')
        return open_clip.create_model(
            model_name, weights_only=True, **kwargs)
    name = _model_name(model_name)
    if pretrained:
        tag_cfg = get_pretrained_cfg(name, pretrained)
        if tag_cfg:
            if tag_cfg.get('quick_gelu', False):
                kwargs.setdefault('force_quick_gelu', True)
            # the tag's preprocessing, as open_clip sets it with the weights
            kwargs.setdefault('force_preprocess_cfg', {
                k: tag_cfg[k] for k in ('mean', 'std', 'interpolation',
                                        'resize_mode') if k in tag_cfg})
        elif _is_torchscript_archive(_weights_file(name, pretrained)):
            kwargs.setdefault('force_quick_gelu', True)
        # the CLIP weights cover the towers: no tower weights downloaded
        kwargs.setdefault('pretrained_text', False)
        if load_weights:
            check_clip_weights(name, pretrained, kwargs.get('cache_dir'))
    with _quiet_random_init():  # said below, in our words
        model = open_clip.create_model(
            name, pretrained=None, weights_only=True, **kwargs)
    if pretrained and load_weights:
        load_clip_weights(model, name, pretrained, kwargs.get('cache_dir'))
    elif pretrained:
        logger.debug(f'open_clip model {name}: built for the {pretrained!r} '
                     'weights, not loaded yet')
    elif load_weights:
        logger.info(f'open_clip model {name}: random initialisation '
                    '(pretrained=None)')
    return model
