"""open_clip model creation (lmclip_mm.models.utils.clip_factory)."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lmclip_mm.models.utils.clip_factory import (  # noqa: E402
    MODEL_CONFIG_DIR, PretrainedWeightsUnavailable, check_clip_weights,
    create_clip_model, load_clip_weights)


def test_tiny_configs_registered():
    names = open_clip.list_models()
    for name in ('lmclip-tiny-vit', 'lmclip-tiny-rn'):
        assert name in names
    assert os.path.isfile(os.path.join(MODEL_CONFIG_DIR,
                                       'lmclip-tiny-vit.json'))
    cfg = open_clip.get_model_config('lmclip-tiny-vit')
    assert cfg['text_cfg']['context_length'] == 77
    assert cfg['vision_cfg']['image_size'] == 64


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


def test_no_random_init_warning_our_line_instead(caplog):
    """open_clip's "Model initialized randomly" is never printed (it is
    wrong when a checkpoint's or init_weights' weights follow); a final
    random model says so in one line of ours."""
    import logging
    with caplog.at_level(logging.INFO):
        create_clip_model('lmclip-tiny-rn')
    messages = [r.getMessage() for r in caplog.records]
    assert not any('initialized randomly' in m for m in messages), messages
    assert ('open_clip model lmclip-tiny-rn: random initialisation '
            '(pretrained=None)') in messages
    caplog.clear()
    with caplog.at_level(logging.INFO):
        create_clip_model('lmclip-tiny-rn', load_weights=False)
    assert not any('random' in r.getMessage() for r in caplog.records)
    # the filter is gone afterwards
    assert not logging.getLogger().filters


def test_weights_loaded_later_equal_weights_loaded_at_creation(tmp_path):
    """load_weights=False builds without reading the file;
    load_clip_weights gives what creation with the weights gives."""
    torch.manual_seed(1)
    path = tmp_path / 'tiny.pt'
    torch.save(create_clip_model('lmclip-tiny-vit').state_dict(), path)
    at_creation = create_clip_model('lmclip-tiny-vit', pretrained=str(path))
    torch.manual_seed(2)
    later = create_clip_model('lmclip-tiny-vit', pretrained=str(path),
                              load_weights=False)
    with pytest.raises(AssertionError):
        _assert_same_params(at_creation, later)
    load_clip_weights(later, 'lmclip-tiny-vit', str(path))
    _assert_same_params(at_creation, later)
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        load_clip_weights(later, 'lmclip-tiny-vit', str(tmp_path / 'nope.pt'))


def _closed_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class _CountingProxy:
    """A loopback "proxy" that accepts connections, counts them and closes
    them at once (no traffic leaves the machine)."""

    def __init__(self):
        import socket
        import threading
        self.count = 0
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.url = f'http://127.0.0.1:{self.sock.getsockname()[1]}'
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize('how', ['HF_HUB_OFFLINE', 'unreachable'])
def test_uncached_tag_fails_fast_offline(how, tmp_path, monkeypatch):
    """No minute of download retries: at most one probe of the hub, then
    one error saying what to do."""
    proxy = _CountingProxy()
    for var in ('HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy',
                'ALL_PROXY', 'all_proxy'):
        monkeypatch.setenv(var, proxy.url)
    monkeypatch.setenv('NO_PROXY', '')
    monkeypatch.setenv('no_proxy', '')
    if how == 'HF_HUB_OFFLINE':
        monkeypatch.setenv('HF_HUB_OFFLINE', '1')
        reason = 'HF_HUB_OFFLINE is set'
    else:
        from huggingface_hub import constants
        monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
        monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
        reason = 'https://huggingface.co cannot be reached: '
    try:
        with pytest.raises(PretrainedWeightsUnavailable) as exc:
            create_clip_model('ViT-B-16', 'openai', cache_dir=str(tmp_path))
    finally:
        proxy.close()
    # offline: no request at all; unreachable: the one probe, no retries
    assert proxy.count == (0 if how == 'HF_HUB_OFFLINE' else 1)
    message = str(exc.value)
    assert message.startswith(
        "the 'openai' weights of ViT-B-16 are not in the local cache and "
        f'cannot be downloaded ({reason}')
    assert message.endswith(
        'run once with network access, or use a local weights file, e.g. '
        '--cfg-options model.clip.pretrained=/path/to/ViT-B-16.pt (OpenAI\'s '
        'released file or an open_clip state dict)')
    assert '\n' not in message
    assert isinstance(exc.value, RuntimeError)


def test_a_tag_builds_offline_without_its_weights(tmp_path, monkeypatch,
                                                  caplog):
    """A model built for the uncached 'openai' tag (load_weights=False, as
    the classifier does: a checkpoint or init_weights brings the weights)
    needs no network: no request at all, the tag's QuickGELU and
    preprocessing, nothing says "random"; loading the weights then fails
    with the one-line error."""
    import logging

    from open_clip.transformer import QuickGELU
    proxy = _CountingProxy()
    for var in ('HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy'):
        monkeypatch.setenv(var, proxy.url)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    try:
        with caplog.at_level(logging.INFO):
            model = create_clip_model('RN50', 'openai', load_weights=False,
                                      cache_dir=str(tmp_path))
        assert proxy.count == 0
    finally:
        proxy.close()
    assert any(isinstance(m, QuickGELU) for m in model.modules())
    assert tuple(model.visual.preprocess_cfg['mean']) == (
        0.48145466, 0.4578275, 0.40821073)
    messages = [r.getMessage() for r in caplog.records]
    assert not any('random' in m for m in messages), messages
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(PretrainedWeightsUnavailable, match='HF_HUB_OFFLINE'):
        check_clip_weights('RN50', 'openai', str(tmp_path))
    with pytest.raises(PretrainedWeightsUnavailable, match='HF_HUB_OFFLINE'):
        load_clip_weights(model, 'RN50', 'openai', str(tmp_path))
    check_clip_weights('RN50', None)  # nothing asked, nothing to check
