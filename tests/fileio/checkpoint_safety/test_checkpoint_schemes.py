"""Every mmengine checkpoint scheme loads with an explicit ``weights_only``.

For each scheme (local, ``http(s)://``, ``s3://``/``petrel://``,
``pavi://``, ``torchvision://``/``modelzoo://``, ``open-mmlab://``,
``mmcls://`` and a scheme registered by someone else) a pickle that runs
code is refused (even with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which
torch only honours when ``weights_only`` is not passed), an mmengine-style
checkpoint loads, a trusted file is fully unpickled, and no environment
variable or torch-global allow-list changes while the file is read.
"""
import functools
import http.server
import io
import json
import os
import shutil
import sys
import threading
import types

import numpy as np
import pytest
import torch

from unpickle_probe import PAYLOAD_RUNS, RunsCode

import lmclip_mm  # noqa: F401
from lmclip_mm.fileio import checkpoint_safety as ckpt_utils
from lmclip_mm.fileio.checkpoint_safety import UntrustedCheckpointError
from mmengine.logging import HistoryBuffer
from mmengine.runner import checkpoint as mm_ckpt
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    ckpt_utils.untrust_all()
    monkeypatch.delenv('LMCLIP_TRUSTED_CHECKPOINTS', raising=False)
    monkeypatch.delenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', raising=False)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    PAYLOAD_RUNS.clear()
    yield
    ckpt_utils.untrust_all()
    PAYLOAD_RUNS.clear()


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('scheme_ckpts')
    buf = HistoryBuffer()
    buf.update(1.)
    buf.update(3.)
    weights = {'backbone.w': torch.ones(2)}
    out = {'good': root / 'good.pth', 'evil': root / 'evil.pth'}
    torch.save(
        dict(state_dict=weights,
             message_hub=dict(log_scalars={'loss': buf}),
             meta=dict(epoch=np.int64(1))), out['good'])
    torch.save(dict(state_dict=weights, meta=dict(x=RunsCode())),
               out['evil'])
    return out


@pytest.fixture(scope='module')
def server(files):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler,
        directory=str(files['good'].parent))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()
    srv.server_close()


def _process_state_unchanged():
    """A map_location checking that nothing process-wide is changed."""
    env = dict(os.environ)
    safe = torch.serialization.get_safe_globals()
    calls = []

    def map_location(storage, location):
        assert dict(os.environ) == env
        assert torch.serialization.get_safe_globals() == safe
        calls.append(location)
        return storage

    map_location.calls = calls
    return map_location


def _check_scheme(good, evil, trust=None):
    """``good`` loads, ``evil`` is refused, then runs once trusted."""
    hook = _process_state_unchanged()
    ckpt = _load_checkpoint(good, map_location=hook)
    assert hook.calls, 'the file was read by torch.load'
    assert ckpt['message_hub']['log_scalars']['loss'].mean() == 2
    with pytest.raises(UntrustedCheckpointError, match='_payload') as err:
        _load_checkpoint(evil, map_location=hook)
    assert evil in str(err.value)
    assert PAYLOAD_RUNS == []
    ckpt_utils.trust_checkpoint(trust or evil)
    _load_checkpoint(evil, map_location=hook)
    assert PAYLOAD_RUNS == ['unpickled'], 'trusted files are fully unpickled'


def test_every_mmengine_scheme_has_an_explicit_loader():
    builtin = {
        '', 'http://', 'https://', 'pavi://', r'(\S+\:)?s3://',
        r'(\S+\:)?petrel://', 'modelzoo://', 'torchvision://',
        'open-mmlab://', 'openmmlab://', 'mmcls://'
    }
    schemes = CheckpointLoader._schemes
    assert builtin <= set(schemes)
    for prefix in builtin:
        loader = schemes[prefix]
        assert loader._lmclip_guarded, prefix
        assert loader._lmclip_explicit is not None, prefix
        # mmengine's log line ("Loads checkpoint by local backend") keeps
        # naming the scheme.
        assert loader.__name__ == loader.__wrapped__.__name__


def test_local(files):
    _check_scheme(str(files['good']), str(files['evil']))


def test_http(files, server, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    _check_scheme(f'{server}/good.pth', f'{server}/evil.pth')
    # downloaded into torch hub's cache, as mmengine/torch.hub do
    assert (tmp_path / 'torch_home/hub/checkpoints/evil.pth').is_file()


@pytest.mark.parametrize('url', ['s3://bucket/{}.pth',
                                 'cluster:s3://bucket/{}.pth',
                                 'petrel://bucket/{}.pth'])
def test_ceph(url, files, monkeypatch):
    seen = []

    class FakeBackend:

        def get(self, filepath):
            name = filepath.rsplit('/', 1)[1]
            return (files['good'].parent / name).read_bytes()

    def get_file_backend(uri, backend_args=None, **kwargs):
        seen.append(backend_args)
        return FakeBackend()

    import mmengine.fileio
    monkeypatch.setattr(mmengine.fileio, 'get_file_backend',
                        get_file_backend)
    _check_scheme(url.format('good'), url.format('evil'))
    assert seen[0] == {'backend': 'petrel'}  # as mmengine's load_from_ceph


def test_pavi(files, monkeypatch):

    class Model:

        def __init__(self, path):
            self.name = path.rsplit('/', 1)[1]

        def download(self, dst):
            shutil.copy(files['good'].parent / self.name, dst)

    pavi = types.ModuleType('pavi')
    pavi.modelcloud = types.SimpleNamespace(get=Model)
    monkeypatch.setitem(sys.modules, 'pavi', pavi)
    _check_scheme('pavi://proj/good.pth', 'pavi://proj/evil.pth')


@pytest.mark.parametrize('prefix', ['torchvision://', 'modelzoo://'])
def test_torchvision(prefix, server, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(
        mm_ckpt, 'get_torchvision_models',
        lambda: dict(good=f'{server}/good.pth', evil=f'{server}/evil.pth'))
    _check_scheme(f'{prefix}good', f'{prefix}evil')


def test_torchvision_trusting_the_resolved_url(server, tmp_path,
                                               monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(
        mm_ckpt, 'get_torchvision_models',
        lambda: dict(good=f'{server}/good.pth', evil=f'{server}/evil.pth'))
    _check_scheme('torchvision://good', 'torchvision://evil',
                  trust=f'{server}/evil.pth')


@pytest.mark.parametrize('prefix', ['open-mmlab://', 'openmmlab://'])
def test_openmmlab(prefix, files, server, tmp_path, monkeypatch):
    home = tmp_path / 'mmengine_home'
    (home / 'ckpts').mkdir(parents=True)
    shutil.copy(files['evil'], home / 'ckpts' / 'evil.pth')
    (home / 'open_mmlab.json').write_text(
        json.dumps(dict(good=f'{server}/good.pth', evil='ckpts/evil.pth')))
    monkeypatch.setenv('MMENGINE_HOME', str(home))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    _check_scheme(f'{prefix}good', f'{prefix}evil')


def test_mmcls(server, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(
        mm_ckpt, 'get_mmcls_models',
        lambda: dict(good=f'{server}/good.pth', evil=f'{server}/evil.pth'))
    hook = _process_state_unchanged()
    ckpt = _load_checkpoint('mmcls://good', map_location=hook)
    assert list(ckpt['state_dict']) == ['w']  # mmcls keys processed
    with pytest.raises(UntrustedCheckpointError):
        _load_checkpoint('mmcls://evil', map_location=hook)
    assert PAYLOAD_RUNS == []


def test_scheme_registered_by_someone_else(files, monkeypatch):
    """Unknown schemes: trusted -> their loader; else mmengine.fileio."""
    used = []

    def load_from_memfs(filename, map_location=None):
        # A third-party loader that would unpickle anything.
        used.append(filename)
        name = filename[len('memfs://'):]
        data = (files['good'].parent / name).read_bytes()
        return torch.load(io.BytesIO(data), map_location=map_location,
                          weights_only=False)

    class MemBackend:

        def get(self, filepath):
            return (files['good'].parent /
                    filepath[len('memfs://'):]).read_bytes()

    import mmengine.fileio
    real = mmengine.fileio.get_file_backend
    monkeypatch.setattr(
        mmengine.fileio, 'get_file_backend', lambda uri, **kw: MemBackend()
        if str(uri).startswith('memfs://') else real(uri, **kw))
    CheckpointLoader.register_scheme('memfs://', load_from_memfs)
    try:
        ckpt_utils.install()
        loader = CheckpointLoader._schemes['memfs://']
        assert loader._lmclip_guarded and loader._lmclip_explicit is None
        _check_scheme('memfs://good.pth', 'memfs://evil.pth')
        assert used == ['memfs://evil.pth']  # only the trusted load
    finally:
        CheckpointLoader._schemes.pop('memfs://', None)


def test_safe_torch_load(files):
    hook = _process_state_unchanged()
    ckpt = ckpt_utils.safe_torch_load(files['good'], map_location=hook)
    assert isinstance(ckpt['message_hub']['log_scalars']['loss'],
                      HistoryBuffer)
    with pytest.raises(UntrustedCheckpointError):
        ckpt_utils.safe_torch_load(files['evil'])
    assert PAYLOAD_RUNS == []
    ckpt_utils.safe_torch_load(files['evil'], trusted=True)
    assert PAYLOAD_RUNS == ['unpickled']
