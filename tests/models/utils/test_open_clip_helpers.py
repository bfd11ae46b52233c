"""open_clip model creation and EOT-truncated text encoding."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lmclip_mm.models.utils.open_clip_helpers import (  # noqa: E402
    MODEL_CONFIG_DIR, create_clip_model, encode_text, eot_truncate,
    supports_eot_truncation)

@pytest.fixture(autouse=True, scope='module')
def _one_torch_thread():
    # Tiny models: one thread is as fast, and it is not slowed down 50x by
    # OpenMP spinning when other processes share the CPU cores.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


def test_tiny_configs_registered():
    names = open_clip.list_models()
    for name in ('lmclip-tiny-vit', 'lmclip-tiny-rn'):
        assert name in names
    assert os.path.isfile(os.path.join(MODEL_CONFIG_DIR,
                                       'lmclip-tiny-vit.json'))
    cfg = open_clip.get_model_config('lmclip-tiny-vit')
    assert cfg['text_cfg']['context_length'] == 77
    assert cfg['vision_cfg']['image_size'] == 64


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


def _assert_same_params(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], atol=0, rtol=0,
                                   msg=key)


def test_pretrained_state_dict_file_round_trip(tmp_path):
    torch.manual_seed(1)
    source = create_clip_model('lmclip-tiny-vit')
    path = tmp_path / 'tiny.pt'
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    loaded = create_clip_model('lmclip-tiny-vit', pretrained=str(path))
    _assert_same_params(source, loaded)


@pytest.mark.filterwarnings('ignore::FutureWarning')
@pytest.mark.filterwarnings('ignore:.*TorchScript archive:UserWarning')
def test_pretrained_torchscript_archive(tmp_path):
    # OpenAI's released CLIP .pt files are TorchScript archives, which
    # torch.load(weights_only=True) (and thus open_clip) refuses.
    torch.manual_seed(3)
    source = create_clip_model('lmclip-tiny-vit')

    class Holder(torch.nn.Module):  # a TorchScript archive with CLIP's keys

        def __init__(self, model):
            super().__init__()
            for name, child in model.named_children():
                self.add_module(name, child)
            for name, param in model.named_parameters(recurse=False):
                self.register_parameter(name, param)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / 'ViT-tiny.pt'
    torch.jit.save(torch.jit.script(Holder(source)), str(path))
    with pytest.raises(RuntimeError, match='TorchScript'):
        open_clip.create_model('lmclip-tiny-vit', pretrained=str(path))
    loaded = create_clip_model('lmclip-tiny-vit', pretrained=str(path))
    _assert_same_params(source, loaded)
    # OpenAI's weights were trained with QuickGELU
    assert isinstance(loaded.transformer.resblocks[0].mlp.gelu,
                      open_clip.transformer.QuickGELU)


def test_pretrained_mismatched_file_raises(tmp_path):
    source = create_clip_model('lmclip-tiny-rn')
    path = tmp_path / 'rn.pt'
    torch.save(source.state_dict(), path)
    with pytest.raises(RuntimeError, match='rn.pt'):
        create_clip_model('lmclip-tiny-vit', pretrained=str(path))


def test_missing_weights_file_raises(tmp_path):
    missing = str(tmp_path / 'nope' / 'ViT-B-16.pt')
    with pytest.raises(FileNotFoundError, match='nope/ViT-B-16.pt'):
        create_clip_model('lmclip-tiny-vit', pretrained=missing)


def test_unknown_model_name_raises():
    with pytest.raises(ValueError, match='list_models') as info:
        create_clip_model('ViT-B-61')
    assert 'ViT-B-16' in str(info.value)  # close matches are suggested


def test_unavailable_pretrained_tag_raises(tmp_path, monkeypatch):
    # offline and not cached: an error, never a silent random init
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(RuntimeError, match='openai'):
        create_clip_model(
            'RN50', pretrained='openai', cache_dir=str(tmp_path))
