"""Weights-only checkpoint loading through every mmengine path.

A checkpoint whose unpickling runs a command must be refused by
``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained')``,
``tools/test.py`` and the HTTP scheme, unless the user trusts the file.
The evil pickle really runs its command when trusted (so these tests can
fail), and mmengine's own checkpoints (HistoryBuffer, numpy) load untrusted.
"""
import functools
import http.server
import os
import pickle
import threading

import numpy as np
import pytest
import torch

import lmclip_mm  # noqa: F401
from lmclip_mm.fileio import checkpoint_safety as ckpt_utils
from lmclip_mm.fileio.checkpoint_safety import UntrustedCheckpointError
from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint


class _RunsCommand:
    """Unpickling this runs ``touch <marker>`` (a stand-in for malware)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class _ReachesAttribute:
    """``getattr(np.ndarray, 'tofile')``: builtins.getattr misuse."""

    def __reduce__(self):
        return (getattr, (np.ndarray, 'tofile'))


@pytest.fixture(autouse=True)
def _forget_trust():
    ckpt_utils.untrust_all()
    yield
    ckpt_utils.untrust_all()


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'evil.pth'
    model = torch.nn.Linear(2, 2)
    torch.save(
        {
            'state_dict': model.state_dict(),
            'meta': {
                'payload': _RunsCommand(marker)
            }
        }, path)
    return path, marker


@pytest.fixture(scope='module')
def mmengine_checkpoint(tmp_path_factory):
    """A real checkpoint written by an mmengine Runner (AdamW + scheduler)."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Tiny(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, x, mode='loss'):
            return dict(loss=self.fc(torch.stack(x)).pow(2).mean())

    class Data(torch.utils.data.Dataset):

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return dict(x=torch.full((2, ), float(i)))

    work_dir = tmp_path_factory.mktemp('mmengine_ckpt')
    runner = Runner(
        model=Tiny(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=Data(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.1)),
        param_scheduler=dict(type='CosineAnnealingLR', T_max=2,
                             by_epoch=True),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1)),
        default_scope='mmpretrain')
    runner.train()
    return work_dir / 'epoch_1.pth'


def test_mmengine_checkpoint_loads_weights_only(mmengine_checkpoint):
    from mmengine.logging import HistoryBuffer
    ckpt = _load_checkpoint(str(mmengine_checkpoint), map_location='cpu')
    assert {'meta', 'state_dict', 'message_hub', 'optimizer',
            'param_schedulers'} <= ckpt.keys()
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer)
    assert np.isfinite(buf.mean())  # statistics methods resolved
    assert ckpt['meta']['epoch'] == 1


def test_plain_torch_load_refuses_mmengine_checkpoint(mmengine_checkpoint):
    # The problem being solved: torch>=2.6 refuses mmengine's own files.
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer|getattr'):
        with torch.serialization.safe_globals([]):
            torch.load(mmengine_checkpoint, weights_only=True)


def test_load_checkpoint_refuses_code(evil):
    path, marker = evil
    with pytest.raises(UntrustedCheckpointError) as err:
        load_checkpoint(torch.nn.Linear(2, 2), str(path))
    assert str(path) in str(err.value)
    assert 'posix.system' in str(err.value) or 'system' in str(err.value)
    assert '--trust-checkpoint' in str(err.value)
    assert not marker.exists()


def test_refused_even_with_force_no_weights_only_env(evil, monkeypatch):
    path, marker = evil
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(UntrustedCheckpointError):
        _load_checkpoint(str(path))
    assert not marker.exists()
    assert os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] == '1'


def test_pretrained_init_cfg_refuses_code(evil):
    path, marker = evil
    from mmengine.model import BaseModule

    class Net(BaseModule):

        def __init__(self):
            super().__init__(
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
            self.fc = torch.nn.Linear(2, 2)

    with pytest.raises(UntrustedCheckpointError):
        Net().init_weights()
    assert not marker.exists()


def test_pretrained_init_cfg_loads_mmengine_checkpoint(mmengine_checkpoint):
    from mmengine.model import BaseModule

    class Net(BaseModule):

        def __init__(self):
            super().__init__(init_cfg=dict(
                type='Pretrained', checkpoint=str(mmengine_checkpoint)))
            self.fc = torch.nn.Linear(2, 1)

    net = Net()
    net.init_weights()
    saved = _load_checkpoint(str(mmengine_checkpoint))['state_dict']
    torch.testing.assert_close(net.fc.weight, saved['fc.weight'])


def test_restricted_getattr_refuses_other_attributes(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _ReachesAttribute()}, path)
    with pytest.raises(UntrustedCheckpointError, match='getattr'):
        _load_checkpoint(str(path))


def test_trusted_file_is_fully_unpickled(evil):
    path, marker = evil
    ckpt_utils.trust_checkpoint(path)
    ckpt = _load_checkpoint(str(path))
    assert marker.exists(), 'the test pickle really runs its command'
    assert 'state_dict' in ckpt
    # trust is per file: another untrusted copy is still refused.
    other = path.with_name('copy.pth')
    other.write_bytes(path.read_bytes())
    marker.unlink()
    with pytest.raises(UntrustedCheckpointError):
        _load_checkpoint(str(other))
    assert not marker.exists()


def test_trusted_directory(evil):
    path, marker = evil
    ckpt_utils.trust_checkpoint(path.parent)
    _load_checkpoint(str(path))
    assert marker.exists()


def test_http_scheme_refuses_code(evil, tmp_path, monkeypatch):
    # mmengine's http loader goes through torch.hub.load_state_dict_from_url,
    # which passes weights_only=False explicitly.
    path, marker = evil
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/{path.name}'
        with pytest.raises(UntrustedCheckpointError, match='127.0.0.1'):
            _load_checkpoint(url)
    finally:
        server.shutdown()
        server.server_close()
    assert not marker.exists()


def test_install_is_idempotent_and_covers_every_scheme():
    from mmengine.runner.checkpoint import CheckpointLoader
    ckpt_utils.install()
    ckpt_utils.install()
    for prefix, loader in CheckpointLoader._schemes.items():
        assert getattr(loader, '_lmclip_guarded', False), prefix
        assert not getattr(loader.__wrapped__, '_lmclip_guarded', False)


def test_clip_pretrained_file_refuses_code(tmp_path):
    """``clip=dict(pretrained='/path/file')`` loads weights-only as well."""
    from lmclip_mm.models.utils import create_clip_model
    marker = tmp_path / 'PWNED'
    model = create_clip_model('lmclip-tiny-vit')
    sd = dict(model.state_dict())
    path = tmp_path / 'clip.pt'
    torch.save({'state_dict': sd, 'x': _RunsCommand(marker)}, path)
    with pytest.raises(UntrustedCheckpointError, match='clip.pt'):
        create_clip_model('lmclip-tiny-vit', pretrained=str(path))
    assert not marker.exists()
    ckpt_utils.trust_checkpoint(path)
    loaded = create_clip_model('lmclip-tiny-vit', pretrained=str(path))
    assert marker.exists()
    torch.testing.assert_close(loaded.logit_scale, model.logit_scale)
