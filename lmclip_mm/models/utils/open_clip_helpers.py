"""Building open_clip models and running their text tower efficiently.

* :func:`create_clip_model` wraps :func:`open_clip.create_model` with strict
  errors (unknown model name, missing weights file, never a silent random
  init when weights were asked for) and also loads OpenAI's released
  TorchScript ``.pt`` files, which ``open_clip.create_model`` refuses with
  ``weights_only=True``.
* :func:`eot_truncate` and :func:`encode_text` run CLIP's causal text
  transformer only up to the last end-of-text token of a batch (identical
  pooled features, fewer positions than the 77 of ``model.encode_text``).
* :func:`encode_texts_packed` goes further: several token tensors (class
  prompts and captions) in one text-tower call, without padding and with
  their shared prefix computed once (identical features).
* :func:`sdpa_attention` makes CPU inference use the fused attention kernel.
* :func:`encode_image` computes the last block of a ViT image tower for the
  class token only, the one position that is pooled (identical features).
* The tiny model configs of ``lmclip_mm/model_configs`` are registered with
  open_clip when this module is imported.
"""
import difflib
import logging
import os
import os.path as osp
import warnings
import zipfile
from contextlib import contextmanager
from typing import List, Optional, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.factory import get_model_config, parse_model_name
from open_clip.model import resize_pos_embed, resize_text_pos_embed
from open_clip.pretrained import (get_pretrained_cfg,
                                  list_pretrained_tags_by_model)
from open_clip.transformer import (CustomResidualAttentionBlock,
                                   ResidualAttentionBlock, VisionTransformer,
                                   text_global_pool)
from torch.utils.checkpoint import checkpoint

from ...utils.checkpoint import (UntrustedCheckpointError, is_trusted,
                                 weights_only_guard)

__all__ = [
    'MODEL_CONFIG_DIR', 'register_model_configs', 'create_clip_model',
    'weights_from_checkpoint', 'PretrainedWeightsUnavailable',
    'supports_eot_truncation', 'eot_truncate', 'encode_text',
    'supports_packing', 'encode_texts_packed', 'sdpa_attention',
    'supports_class_token_shortcut', 'encode_image'
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


#: checkpoints whose weights replace those of the CLIP models built now
_checkpoints: List[str] = []


@contextmanager
def weights_from_checkpoint(checkpoint: str):
    """While active, a CLIP created without pretrained weights is not
    announced as "initialized randomly" by open_clip: the caller loads
    ``checkpoint`` into it afterwards (``tools/test.py``,
    ``tools/infer.py``). Training from scratch keeps the warning."""
    _checkpoints.append(str(checkpoint))
    try:
        yield
    finally:
        _checkpoints.pop()


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


def create_clip_model(model_name: str,
                      pretrained: Optional[str] = None,
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
        PretrainedWeightsUnavailable: the weights of a tag are not cached
            and their host cannot be reached (``HF_HUB_OFFLINE=1``, no
            network); raised within :data:`HUB_PROBE_TIMEOUT` seconds.
        RuntimeError: the weights could not be obtained or loaded.
    """
    for bad in ('jit', 'require_pretrained', 'weights_only'):
        if bad in kwargs:
            raise ValueError(f'create_clip_model does not accept {bad!r}')
    schema, _ = parse_model_name(model_name)
    name = model_name.replace('/', '-') if schema is None else model_name
    if schema is None and get_model_config(name) is None:
        raise _unknown_model_error(model_name)
    if schema is not None:
        if pretrained:
            raise ValueError(f'{model_name!r} brings its own weights; '
                             'pretrained must be None')
        return open_clip.create_model(
            model_name, weights_only=True, **kwargs)

    if not pretrained:
        if _checkpoints:
            logger.info(f'open_clip model {name}: weights from the '
                        f'checkpoint {_checkpoints[-1]}')
            with _quiet_random_init():
                return open_clip.create_model(
                    name, pretrained=None, weights_only=True, **kwargs)
        logger.info(f'open_clip model {name}: random initialisation '
                    '(pretrained=None)')
        return open_clip.create_model(
            name, pretrained=None, weights_only=True, **kwargs)

    tag_cfg = get_pretrained_cfg(name, pretrained)
    if tag_cfg:
        if tag_cfg.get('quick_gelu', False):
            kwargs.setdefault('force_quick_gelu', True)
        if not _tag_weights_cached(tag_cfg, kwargs.get('cache_dir')):
            # fail fast offline (huggingface_hub would retry for a minute)
            why = _offline_reason(tag_cfg)
            if why and _checkpoints:
                # tools/test.py, tools/infer.py: a checkpoint replaces the
                # weights; build the tag's architecture (its activation,
                # its preprocessing) without them
                logger.info(f'open_clip model {name}: the {pretrained!r} '
                            f'weights are not available ({why}); weights '
                            f'from the checkpoint {_checkpoints[-1]}')
                kwargs.setdefault('force_preprocess_cfg', {
                    k: tag_cfg[k] for k in ('mean', 'std', 'interpolation',
                                            'resize_mode') if k in tag_cfg})
                with _quiet_random_init():
                    return open_clip.create_model(
                        name, pretrained=None, weights_only=True, **kwargs)
            if why:
                raise PretrainedWeightsUnavailable(
                    f'the {pretrained!r} weights of {name} are not in the '
                    f'local cache and cannot be downloaded ({why}): run once '
                    'with network access, or use a local weights file, '
                    f'e.g. --cfg-options model.clip.pretrained=/path/to/'
                    f'{name}.pt (OpenAI\'s released file or an open_clip '
                    'state dict)')
        try:
            return open_clip.create_model(
                name,
                pretrained=pretrained,
                require_pretrained=True,
                weights_only=True,
                **kwargs)
        except Exception as e:
            raise RuntimeError(
                f'Could not load the {pretrained!r} weights of {name} ({e}). '
                'Offline, they must already be in the Hugging Face hub cache '
                '(HF_HUB_OFFLINE=1); otherwise pass the path of a local '
                'weights file, e.g. OpenAI\'s ViT-B-16.pt, as pretrained.'
            ) from e

    path = osp.expanduser(pretrained)
    if not osp.isfile(path):
        tags = list_pretrained_tags_by_model(name)
        raise FileNotFoundError(
            f'pretrained weights file not found: {path!r} (nor is '
            f'{pretrained!r} a pretrained tag of {name}; its tags: {tags})')
    if _is_torchscript_archive(path):
        kwargs.setdefault('force_quick_gelu', True)
        with _quiet_random_init():  # the archive's weights follow
            model = open_clip.create_model(
                name, pretrained=None, weights_only=True, **kwargs)
        try:
            _load_torchscript_weights(model, path)
        except Exception as e:
            raise RuntimeError(f'Could not load the TorchScript CLIP weights '
                               f'{path!r} into {name}: {e}') from e
        logger.info(f'open_clip model {name}: loaded TorchScript weights '
                    f'{path}')
        return model
    # Weights-only unpickling unless the user trusts this very file
    # (lmclip_mm.utils.checkpoint.trust_checkpoint / --trust-checkpoint).
    trusted = is_trusted(path)
    try:
        with weights_only_guard(path, trusted=trusted):
            return open_clip.create_model(
                name,
                pretrained=path,
                require_pretrained=True,
                weights_only=not trusted,
                **kwargs)
    except UntrustedCheckpointError:
        raise
    except Exception as e:
        raise RuntimeError(
            f'Could not load the weights file {path!r} into {name}: {e}'
        ) from e


# ---------------------------------------------------------------------------
# Text tower


def supports_eot_truncation(model: torch.nn.Module) -> bool:
    """Whether the pooled text feature only depends on tokens up to EOT.

    True for open_clip's :class:`~open_clip.CLIP` (OpenAI-style text tower
    inside the model) with a causal attention mask and ``argmax`` / ``eos``
    / ``first`` pooling: position ``i`` then only attends to positions
    ``<= i``, so the positions after the pooled one cannot change it.
    """
    return (isinstance(model, open_clip.CLIP)
            and getattr(model, 'attn_mask', None) is not None
            and getattr(model, 'text_pool_type', None) in ('argmax', 'eos',
                                                           'first'))


def _pool_index(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    pool = model.text_pool_type
    if pool == 'argmax':
        return tokens.argmax(dim=-1)
    if pool == 'eos':
        return (tokens == model.text_eos_id).int().argmax(dim=-1)
    return tokens.new_zeros(tokens.shape[:1])  # 'first'


def eot_truncate(model: torch.nn.Module,
                 tokens: torch.Tensor) -> torch.Tensor:
    """Drop the token positions after the last pooled (EOT) position.

    ``encode_text(model, eot_truncate(model, t))`` equals
    ``model.encode_text(t)``. A no-op for models where that does not hold
    (see :func:`supports_eot_truncation`). Call it on CPU tokens (it reads
    one integer) before moving them to the device.
    """
    if tokens.ndim != 2:
        raise ValueError(f'tokens must be (B, L), got {tuple(tokens.shape)}')
    if not supports_eot_truncation(model) or tokens.size(0) == 0:
        return tokens
    length = int(_pool_index(model, tokens).max()) + 1
    return tokens[:, :length].contiguous()


def _project_text(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The text projection of open_clip's ``CLIP.encode_text``."""
    if model.text_projection is None:
        return x
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection


def encode_text(model: torch.nn.Module,
                tokens: torch.Tensor,
                normalize: bool = False) -> torch.Tensor:
    """``model.encode_text`` for token tensors of any length ``L <= ctx``.

    For models supported by :func:`supports_eot_truncation` this is
    open_clip's ``CLIP.encode_text`` with ``positional_embedding[:L]`` and
    ``attn_mask[:L, :L]``; other models get ``model.encode_text(tokens)``.
    """
    if not supports_eot_truncation(model):
        return model.encode_text(tokens, normalize=normalize)
    length = tokens.size(1)
    if length > model.positional_embedding.size(0):
        raise ValueError(
            f'{length} tokens exceed the context length '
            f'{model.positional_embedding.size(0)} of the text tower')
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(
        x, tokens, model.text_pool_type,
        eos_token_id=getattr(model, 'text_eos_id', None))
    x = _project_text(model, x)
    return F.normalize(x, dim=-1) if normalize else x


#: the longest packed token sequence of one text-tower call (the attention
#: of a packed sequence is quadratic in its length)
MAX_PACKED_TOKENS = 512


@contextmanager
def sdpa_attention(device: torch.device):
    """On CPU, run ``nn.MultiheadAttention`` without its inference fast path.

    Without autograd, ``nn.MultiheadAttention`` takes a native "fast path"
    (``torch._native_multi_head_attention``: batched matmuls and a softmax);
    on CPU its general path, ``scaled_dot_product_attention``'s fused kernel,
    computes the same attention faster (measured ~7-10% of a ViT-B/16
    forward on 2 cores). The switch (``torch.backends.mha``) is
    process-wide: it is set for the block and restored after it. Training
    never takes the fast path; other devices are left alone.
    """
    mha = getattr(torch.backends, 'mha', None)
    if device.type != 'cpu' or mha is None or \
            not hasattr(mha, 'set_fastpath_enabled'):
        yield
        return
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def supports_packing(model: torch.nn.Module) -> bool:
    """Whether :func:`encode_texts_packed` applies to ``model``.

    Needs what :func:`~lmclip_mm.models.utils.supports_eot_truncation`
    needs (open_clip's CLIP text tower, causal mask, EOT pooling) and
    open_clip's self-attention blocks, in which a position only interacts
    with others through the additive attention mask.
    """
    if not supports_eot_truncation(model):
        return False
    blocks = getattr(getattr(model, 'transformer', None), 'resblocks', None)
    return blocks is not None and len(blocks) > 0 and all(
        type(b) in (ResidualAttentionBlock, CustomResidualAttentionBlock)
        and not hasattr(b, 'ln_1_kv') for b in blocks)


def _packed_layout(model: torch.nn.Module,
                   token_sets: Sequence[torch.Tensor],
                   max_tokens: int) -> List[dict]:
    """Lay the texts of ``token_sets`` end to end (see
    :func:`encode_texts_packed`); one dict per text-tower call."""
    chunks, chunk, chunk_set, row_id = [], None, None, 0
    for s, tokens in enumerate(token_sets):
        tokens = tokens.cpu()
        pool = _pool_index(model, tokens).tolist()
        same = (tokens == tokens[:1]).all(dim=0).long().cumprod(dim=0)
        prefix = min(int(same.sum()), min(pool))
        prefix_tokens = tokens[0, :prefix].tolist()
        for r, end in enumerate(pool):
            suffix = tokens[r, prefix:end + 1].tolist()
            need = len(suffix) + (prefix if chunk_set != s else 0)
            if chunk is None or (chunk['tokens'] and
                                 len(chunk['tokens']) + need > max_tokens):
                chunk = dict(tokens=[], positions=[], segment=[], owner=[],
                             pooled=[])
                chunks.append(chunk)
                chunk_set = None
            if chunk_set != s:  # the set's shared prefix, once per call
                chunk['tokens'] += prefix_tokens
                chunk['positions'] += range(prefix)
                chunk['segment'] += [-1 - s] * prefix
                chunk['owner'] += [s] * prefix
                chunk_set = s
            chunk['tokens'] += suffix
            chunk['positions'] += range(prefix, end + 1)
            chunk['segment'] += [row_id] * len(suffix)
            chunk['owner'] += [s] * len(suffix)
            chunk['pooled'].append(len(chunk['tokens']) - 1)
            row_id += 1
    return chunks


def _packed_call(model: torch.nn.Module, chunk: dict,
                 device: torch.device) -> torch.Tensor:
    """Pooled features (before the projection) of one packed sequence."""
    segment = torch.tensor(chunk['segment'])
    owner = torch.tensor(chunk['owner'])
    i = torch.arange(segment.numel())
    # causal, and only within the own text or the shared prefix of its set
    allowed = (i[None, :] <= i[:, None]) & (
        (segment[None, :] == segment[:, None])
        | (segment[None, :] == -1 - owner[:, None]))
    cast_dtype = model.transformer.get_cast_dtype()
    mask = torch.zeros(allowed.shape, dtype=cast_dtype).masked_fill_(
        ~allowed, float('-inf'))
    tokens = torch.tensor(chunk['tokens'], device=device)
    positions = torch.tensor(chunk['positions'], device=device)
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[positions].to(cast_dtype)
    x = model.transformer(x[None], attn_mask=mask.to(device))
    x = model.ln_final(x)[0]
    return x[torch.tensor(chunk['pooled'], device=device)]


def encode_texts_packed(model: torch.nn.Module,
                        token_sets: Sequence[torch.Tensor],
                        max_tokens: int = MAX_PACKED_TOKENS
                        ) -> List[torch.Tensor]:
    """``model.encode_text`` of several token tensors, packed.

    Equals ``[model.encode_text(t) for t in token_sets]`` (up to float
    rounding) for models of :func:`supports_packing`, with less work. The
    text tower is causal: position ``i`` of a text depends on its tokens
    ``<= i`` only, and the pooled feature is taken at the EOT token. So the
    texts are laid end to end in one sequence, each cut after its EOT token
    (no padding); the prefix shared by all texts of a tensor (e.g.
    ``'<start> a photo of a'`` of the class prompts) is laid once, before
    them; an additive attention mask lets every position see only the
    positions of its own text up to itself and its tensor's shared prefix;
    the position embeddings restart after the prefix for each text. One
    text-tower call per ``max_tokens`` tokens (a text is never split).

    Args:
        model: an open_clip CLIP model (see :func:`supports_packing`).
        token_sets: (N_i, L_i) token tensors, CPU or device, EOT-truncated
            or not; the layout is computed on the CPU.
        max_tokens: the longest packed sequence of one call.

    Returns:
        list of (N_i, D) text features, not normalised.
    """
    sizes = [t.size(0) for t in token_sets]
    device = model.positional_embedding.device
    chunks = _packed_layout(
        model, [t for t in token_sets if t.size(0)], max_tokens)
    if not chunks:  # nothing but empty tensors
        return [encode_text(model, t.to(device)) for t in token_sets]
    x = torch.cat([_packed_call(model, c, device) for c in chunks])
    return list(_project_text(model, x).split(sizes))


# ---------------------------------------------------------------------------
# Image tower


def supports_class_token_shortcut(model: torch.nn.Module) -> bool:
    """Whether :func:`encode_image` may compute the last block of the image
    tower for the class token only.

    True for open_clip's :class:`~open_clip.transformer.VisionTransformer`
    with class-token pooling (``pool_type='tok'``, no attentional pooler, no
    token output) whose last block is a plain ``ResidualAttentionBlock``:
    the pooled feature is the class token's output of the last block, which
    depends on all tokens only through that block's keys and values.
    """
    visual = getattr(model, 'visual', None)
    if not isinstance(visual, VisionTransformer) or not all(
            hasattr(visual, a) for a in ('_embeds', '_pool')):
        return False
    blocks = visual.transformer.resblocks
    return (visual.attn_pool is None and visual.pool_type == 'tok'
            and not visual.output_tokens and visual.transformer.batch_first
            and len(blocks) > 0
            and type(blocks[-1]) is ResidualAttentionBlock
            and not hasattr(blocks[-1], 'ln_1_kv'))


def encode_image(model: torch.nn.Module, images: torch.Tensor,
                 normalize: bool = False) -> torch.Tensor:
    """``model.encode_image(images)``, with less work where possible.

    For models of :func:`supports_class_token_shortcut` the last transformer
    block runs its attention query, output projection and MLP for the class
    token only (its keys and values still come from all tokens): the same
    per-position computations as open_clip's, minus the positions that
    pooling discards (for ViT-B/16 at 224 px about 7% of the image tower's
    FLOPs). Other models get ``model.encode_image``.
    """
    if not supports_class_token_shortcut(model):
        return model.encode_image(images, normalize=normalize)
    visual = model.visual
    transformer = visual.transformer
    x = visual._embeds(images)
    for block in transformer.resblocks[:-1]:
        if transformer.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, None, None, None, use_reentrant=False)
        else:
            x = block(x)
    last = transformer.resblocks[-1]
    y = last.ln_1(x)
    attended = last.attn(y[:, :1], y, y, need_weights=False)[0]
    cls = x[:, :1] + last.ls_1(attended)
    cls = cls + last.ls_2(last.mlp(last.ln_2(cls)))
    pooled, _ = visual._pool(cls)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return F.normalize(pooled, dim=-1) if normalize else pooled
