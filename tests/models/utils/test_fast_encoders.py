"""EOT-truncated, packed and class-token-only encoding
(lmclip_mm.models.utils.fast_encoders)."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lmclip_mm.models.utils.clip_factory import \
    create_clip_model  # noqa: E402
from lmclip_mm.models.utils.fast_encoders import (  # noqa: E402
    encode_image, encode_text, encode_texts_packed, eot_truncate,
    sdpa_attention, supports_class_token_shortcut, supports_eot_truncation,
    supports_packing)


TEXTS = [
    'a photo of a cat',
    'a photo of a traffic light',
    'x',
    '',
    # longer than the context: the tokenizer truncates, EOT at position 76
    ' '.join(['word'] * 100),
]


@pytest.fixture(scope='module')
def tiny_vit():
    torch.manual_seed(0)
    return create_clip_model('lmclip-tiny-vit').eval()


@pytest.mark.parametrize('texts', [TEXTS[:2], TEXTS[:4], TEXTS])
def test_eot_truncation_matches_full_encode_text(tiny_vit, texts):
    tokenizer = open_clip.get_tokenizer('lmclip-tiny-vit')
    tokens = tokenizer(texts)
    assert tokens.shape == (len(texts), 77)
    short = eot_truncate(tiny_vit, tokens)
    expected_len = int(tokens.argmax(-1).max()) + 1
    assert short.shape == (len(texts), expected_len)
    if len(texts) < 5:
        assert expected_len < 77
    with torch.no_grad():
        full = tiny_vit.encode_text(tokens)
        ours = encode_text(tiny_vit, short)
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        encode_text(tiny_vit, short, normalize=True),
        torch.nn.functional.normalize(full, dim=-1),
        atol=1e-5,
        rtol=1e-5)


def test_eot_truncation_gradients_match(tiny_vit):
    tokens = open_clip.get_tokenizer('lmclip-tiny-vit')(TEXTS[:3])
    grads = []
    for fn in (lambda: tiny_vit.encode_text(tokens),
               lambda: encode_text(tiny_vit, eot_truncate(tiny_vit, tokens))):
        tiny_vit.zero_grad()
        fn().pow(2).sum().backward()
        grads.append(tiny_vit.transformer.resblocks[0].attn.in_proj_weight
                     .grad.clone())
    tiny_vit.zero_grad()
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_eos_pooling_truncation():
    torch.manual_seed(0)
    text_cfg = dict(open_clip.get_model_config('lmclip-tiny-vit')['text_cfg'])
    text_cfg.update(pool_type='eos', eos_id=49407)
    model = create_clip_model('lmclip-tiny-vit', text_cfg=text_cfg).eval()
    assert model.text_pool_type == 'eos'
    tokens = open_clip.get_tokenizer('lmclip-tiny-vit')(TEXTS[:2])
    short = eot_truncate(model, tokens)
    assert short.shape[1] < 77
    with torch.no_grad():
        torch.testing.assert_close(
            encode_text(model, short), model.encode_text(tokens), atol=1e-5,
            rtol=1e-5)


def test_no_truncation_without_causal_mask():
    text_cfg = dict(open_clip.get_model_config('lmclip-tiny-vit')['text_cfg'])
    text_cfg.update(no_causal_mask=True)
    model = create_clip_model('lmclip-tiny-vit', text_cfg=text_cfg).eval()
    assert not supports_eot_truncation(model)
    tokens = open_clip.get_tokenizer('lmclip-tiny-vit')(TEXTS[:2])
    assert eot_truncate(model, tokens).shape == tokens.shape
    with torch.no_grad():
        torch.testing.assert_close(
            encode_text(model, tokens), model.encode_text(tokens))


# ---------------------------------------------------------------------------
# Packed text encoding


def _tiny_with_text(**text_options):
    torch.manual_seed(0)
    text_cfg = dict(open_clip.get_model_config('lmclip-tiny-vit')['text_cfg'])
    text_cfg.update(text_options)
    return create_clip_model('lmclip-tiny-vit', text_cfg=text_cfg)


def _features_and_grads(model, encode, weights):
    model.zero_grad()
    feats = encode()
    sum((f * w).sum() for f, w in zip(feats, weights)).backward()
    return [f.detach() for f in feats], {
        n: p.grad.clone() for n, p in model.named_parameters()
        if p.grad is not None}


def _rel(a, b):  # float rounding only: relative to the largest entry
    return float((a - b).abs().max() / b.abs().max())


PROMPTS = [f'a photo of a {c}'
           for c in ('cat', 'dog', 'traffic light', 'hair drier')]


@pytest.mark.parametrize('text_options,max_tokens', [
    ({}, 512),
    ({}, 20),  # several text-tower calls
    ({}, 1),  # one text per call
    (dict(pool_type='eos', eos_id=49407), 512),
    (dict(block_type='custom'), 512),  # CustomResidualAttentionBlock
    (dict(ls_init_value=0.5), 512),  # layer scale
])
def test_packed_text_encoding_equals_open_clip(text_options, max_tokens):
    # Features AND gradients of the packed pass equal open_clip's own full
    # 77-token encode_text, tensor by tensor (prompts with a shared prefix;
    # captions incl. an empty one and one cut at the context length).
    model = _tiny_with_text(**text_options)
    assert supports_packing(model)
    tokenizer = open_clip.get_tokenizer('lmclip-tiny-vit')
    sets = [tokenizer(PROMPTS), tokenizer(TEXTS), tokenizer(['one text'])]
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.size(0), 64, generator=g) for t in sets]
    ref, ref_grads = _features_and_grads(
        model, lambda: [model.encode_text(t) for t in sets], weights)
    ours, grads = _features_and_grads(
        model, lambda: encode_texts_packed(
            model, [eot_truncate(model, t) for t in sets],
            max_tokens=max_tokens), weights)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and _rel(a, b) < 1e-5
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert _rel(grad, ref_grads[name]) < 1e-5, name


def test_packed_text_encoding_does_less_work(tiny_vit):
    # The prompts' shared prefix '<start> a photo of a' is laid once: the
    # packed sequence is shorter than the texts cut at their own EOT.
    tokenizer = open_clip.get_tokenizer('lmclip-tiny-vit')
    tokens = tokenizer(PROMPTS)
    lengths = (tokens.argmax(dim=-1) + 1).tolist()
    seen = []
    handle = tiny_vit.transformer.register_forward_hook(
        lambda module, args, out: seen.append(tuple(args[0].shape[:2])))
    try:
        with torch.no_grad():
            encode_texts_packed(tiny_vit, [tokens])
    finally:
        handle.remove()
    prefix = 5  # <start> a photo of a
    assert seen == [(1, prefix + sum(n - prefix for n in lengths))]
    assert seen[0][1] < sum(lengths) < 4 * 77


def test_packed_text_encoding_empty_sets(tiny_vit):
    tokens = open_clip.get_tokenizer('lmclip-tiny-vit')(PROMPTS[:2])
    empty = tokens[:0]
    with torch.no_grad():
        out = encode_texts_packed(tiny_vit, [empty, tokens, empty])
        ref = tiny_vit.encode_text(tokens)
        alone = encode_texts_packed(tiny_vit, [empty])
    assert [tuple(o.shape) for o in out] == [(0, 64), (2, 64), (0, 64)]
    assert _rel(out[1], ref) < 1e-5
    assert tuple(alone[0].shape) == (0, 64)


def test_no_packing_without_causal_mask():
    assert not supports_packing(_tiny_with_text(no_causal_mask=True))


@pytest.mark.skipif(not hasattr(getattr(torch.backends, 'mha', None),
                                'set_fastpath_enabled'),
                    reason='this torch has no MHA fast-path switch')
def test_sdpa_attention_switch_is_scoped(tiny_vit):
    mha = torch.backends.mha
    assert mha.get_fastpath_enabled()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fast = tiny_vit.encode_image(images)
        with sdpa_attention(torch.device('cpu')):
            assert not mha.get_fastpath_enabled()
            general = tiny_vit.encode_image(images)
        assert mha.get_fastpath_enabled()
        with pytest.raises(KeyError):  # restored after an error too
            with sdpa_attention(torch.device('cpu')):
                raise KeyError
        assert mha.get_fastpath_enabled()
        with sdpa_attention(torch.device('cuda')):  # other devices: as is
            assert mha.get_fastpath_enabled()
    torch.testing.assert_close(general, fast, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Image tower: the last block for the class token only


def _tiny_with_vision(**vision_options):
    torch.manual_seed(0)
    vision_cfg = dict(
        open_clip.get_model_config('lmclip-tiny-vit')['vision_cfg'])
    vision_cfg.update(vision_options)
    return create_clip_model('lmclip-tiny-vit', vision_cfg=vision_cfg)


@pytest.mark.parametrize('vision_options,checkpointing', [
    ({}, False),
    ({}, True),  # gradient checkpointing of the other blocks
    (dict(ls_init_value=0.5), False),  # layer scale
    (dict(final_ln_after_pool=True), False),
    (dict(patch_dropout=0.5), False),  # drops patches, keeps the token
])
def test_class_token_shortcut_equals_open_clip(vision_options,
                                               checkpointing):
    model = _tiny_with_vision(**vision_options).train()
    assert supports_class_token_shortcut(model)
    model.visual.set_grad_checkpointing(checkpointing)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator()
                         .manual_seed(1))
    weight = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))

    def run(encode):
        torch.manual_seed(3)  # the same patch dropout in both runs
        model.zero_grad()
        out = encode(images)
        (out * weight).sum().backward()
        return out.detach(), {n: p.grad.clone()
                              for n, p in model.visual.named_parameters()
                              if p.grad is not None}

    ref, ref_grads = run(model.encode_image)
    ours, grads = run(lambda x: encode_image(model, x))
    assert _rel(ours, ref) < 1e-5
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert _rel(grad, ref_grads[name]) < 1e-5, name
    with torch.no_grad():
        torch.testing.assert_close(
            encode_image(model.eval(), images, normalize=True),
            model.encode_image(images, normalize=True), rtol=1e-5,
            atol=1e-6)


def test_class_token_shortcut_runs_the_last_mlp_on_one_token(tiny_vit):
    seen = []
    blocks = tiny_vit.visual.transformer.resblocks
    hooks = [b.mlp.register_forward_hook(
        lambda module, args, out, i=i: seen.append((i, args[0].shape[1])))
        for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            encode_image(tiny_vit, torch.randn(2, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    # 4x4 patches + the class token, then the class token only
    assert seen == [(0, 17), (1, 1)]


@pytest.mark.parametrize('model_or_options', [
    'lmclip-tiny-rn',  # ModifiedResNet: attention pooling, used as is
    dict(pool_type='avg'),  # every token is pooled
    dict(attentional_pool=True),
])
def test_no_class_token_shortcut(model_or_options):
    if isinstance(model_or_options, str):
        torch.manual_seed(0)
        model = create_clip_model(model_or_options)
        size = model.visual.image_size
        size = size if isinstance(size, int) else size[0]
    else:
        model, size = _tiny_with_vision(**model_or_options), 64
    model.eval()
    assert not supports_class_token_shortcut(model)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(encode_image(model, images),
                                   model.encode_image(images))
