"""Running open_clip's towers with less work, identical features
(open_clip's ``transformer.py`` seam).

* :func:`eot_truncate` and :func:`encode_text` run CLIP's causal text
  transformer only up to the last end-of-text token of a batch (identical
  pooled features, fewer positions than the 77 of ``model.encode_text``).
* :func:`encode_texts_packed` goes further: several token tensors (class
  prompts and captions) in one text-tower call, without padding and with
  their shared prefix computed once (identical features).
* :func:`sdpa_attention` makes CPU inference use the fused attention kernel.
* :func:`encode_image` computes the last block of a ViT image tower for the
  class token only, the one position that is pooled (identical features).

Building the models is :mod:`~lmclip_mm.models.utils.clip_factory`'s.
"""
from contextlib import contextmanager
from typing import List, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import (CustomResidualAttentionBlock,
                                   ResidualAttentionBlock, VisionTransformer,
                                   text_global_pool)
from torch.utils.checkpoint import checkpoint

__all__ = [
    'supports_eot_truncation', 'eot_truncate', 'encode_text',
    'supports_packing', 'encode_texts_packed', 'sdpa_attention',
    'supports_class_token_shortcut', 'encode_image'
]


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
