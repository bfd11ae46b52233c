"""The narrow opt-in for tools we do not own: ``LMCLIP_TRUSTED_CHECKPOINTS``.

An ``os.pathsep``-separated list of files, directories (every file under
them) and URLs (verbatim), read at each load. Values that would trust
everything are ignored with a warning. The refusal says how to opt in, and
following its advice loads the file.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from unpickle_probe import PAYLOAD_RUNS, RunsCode

import lmclip_mm  # noqa: F401
from lmclip_mm.fileio import checkpoint_safety as ckpt_utils
from lmclip_mm.fileio.checkpoint_safety import UntrustedCheckpointError, is_trusted
from mmengine.runner.checkpoint import _load_checkpoint

ENV = 'LMCLIP_TRUSTED_CHECKPOINTS'


class _CreatesFile:
    """Unpickling this creates ``path`` (usable in a fresh process)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    ckpt_utils.untrust_all()
    from lmclip_mm.fileio.checkpoint_safety import trust
    trust._WARNED.clear()  # warn again per test
    monkeypatch.delenv(ENV, raising=False)
    PAYLOAD_RUNS.clear()
    yield
    ckpt_utils.untrust_all()
    PAYLOAD_RUNS.clear()


@pytest.fixture
def evil(tmp_path):
    path = tmp_path / 'ckpts' / 'evil.pth'
    path.parent.mkdir()
    torch.save({'state_dict': {'w': torch.ones(1)}, 'x': RunsCode()}, path)
    return path


def _refused(path):
    with pytest.raises(UntrustedCheckpointError) as err:
        _load_checkpoint(str(path))
    assert PAYLOAD_RUNS == []
    return str(err.value)


def test_env_name():
    assert ckpt_utils.TRUSTED_CHECKPOINTS_ENV == ENV


def test_env_file_is_read_at_each_load(evil, monkeypatch):
    _refused(evil)
    monkeypatch.setenv(ENV, str(evil))
    _load_checkpoint(str(evil))
    assert PAYLOAD_RUNS == ['unpickled']
    PAYLOAD_RUNS.clear()
    monkeypatch.delenv(ENV)
    _refused(evil)


def test_env_directory_and_list(evil, tmp_path, monkeypatch):
    other = tmp_path / 'other.pth'
    other.write_bytes(evil.read_bytes())
    sibling = tmp_path / 'ckpts2' / 'evil.pth'  # 'ckpts' is a prefix only
    sibling.parent.mkdir()
    sibling.write_bytes(evil.read_bytes())
    monkeypatch.setenv(
        ENV, os.pathsep.join(['/nonexistent/x.pth',
                              str(evil.parent) + os.sep, '']))
    _load_checkpoint(str(evil))
    assert PAYLOAD_RUNS == ['unpickled']
    PAYLOAD_RUNS.clear()
    _refused(other)
    _refused(sibling)


def test_env_relative_path_resolves_at_load_time(evil, monkeypatch):
    monkeypatch.chdir(evil.parent.parent)
    monkeypatch.setenv(ENV, os.path.join('ckpts', 'evil.pth'))
    assert is_trusted(evil)
    monkeypatch.chdir(evil.parent)
    assert not is_trusted(evil)


@pytest.mark.skipif(os.pathsep != ':', reason='POSIX path separator')
def test_env_urls_verbatim_with_colons(tmp_path, monkeypatch):
    monkeypatch.setenv(
        ENV, ':'.join([
            'https://example.com:8443/a.pth', 'http://h/b.pth',
            str(tmp_path), 's3://bucket/c.pth', 'open-mmlab:s3://d/e.pth'
        ]))
    for url in ('https://example.com:8443/a.pth', 'http://h/b.pth',
                's3://bucket/c.pth', 'open-mmlab:s3://d/e.pth'):
        assert is_trusted(url), url
    assert is_trusted(tmp_path / 'x.pth')
    for url in ('https://example.com:8443/b.pth', 'https://example.com',
                'http://h/b.pth.evil', 'http://h/', 's3://bucket/c'):
        assert not is_trusted(url), url


@pytest.mark.parametrize('value', ['*', '/', '1', 'true', 'TRUE', 'yes',
                                   'on', 'all', '/*', '//', '~/*.pth'])
def test_blanket_values_are_ignored_with_a_warning(value, evil,
                                                   monkeypatch):
    monkeypatch.setenv(ENV, value)
    with pytest.warns(UserWarning, match=f'Ignoring .* in {ENV}'):
        _refused(evil)
    # only once per value, not at every load
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _refused(evil)


def test_blanket_value_next_to_a_real_entry(evil, monkeypatch):
    monkeypatch.setenv(ENV, os.pathsep.join(['*', str(evil)]))
    with pytest.warns(UserWarning, match="Ignoring '\\*'"):
        _load_checkpoint(str(evil))
    assert PAYLOAD_RUNS == ['unpickled']


def test_torch_force_no_weights_only_is_not_an_opt_in(evil, monkeypatch):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    message = _refused(evil)
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD does not' in message


def test_refusal_says_how_to_opt_in_and_the_advice_works(
        evil, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = os.path.join('ckpts', 'evil.pth')
    message = _refused(relative)
    assert f'Refusing to load checkpoint "{relative}"' in message
    assert '_payload' in message  # the offending global
    assert '--trust-checkpoint' in message
    assert 'trust_checkpoint(path)' in message
    assert f'{ENV}={evil}' in message  # absolute: works from any cwd
    value = re.search(f'{ENV}=(\\S+)', message).group(1)
    monkeypatch.setenv(ENV, value)
    monkeypatch.chdir('/')
    _load_checkpoint(str(evil))
    assert PAYLOAD_RUNS == ['unpickled']


def test_a_tool_we_do_not_own_in_a_fresh_process(tmp_path):
    """The variable, set before the process starts, trusts just its files."""
    trusted_dir = tmp_path / 'trusted'
    trusted_dir.mkdir()
    files = {}
    for name, folder in (('untrusted', tmp_path), ('trusted', trusted_dir)):
        files[name] = folder / f'{name}.pth'
        torch.save(
            {
                'state_dict': torch.nn.Linear(2, 2).state_dict(),
                'meta': _CreatesFile(tmp_path / f'RAN_{name}')
            }, files[name])
    tool = tmp_path / 'third_party_tool.py'
    tool.write_text(
        textwrap.dedent("""
        import sys
        import torch
        import lmclip_mm  # e.g. through custom_imports
        from mmengine.runner import load_checkpoint
        for path in sys.argv[1:]:
            try:
                load_checkpoint(torch.nn.Linear(2, 2), path, logger='silent')
                print('LOADED', path)
            except Exception as e:
                print('REFUSED', path, type(e).__name__, str(e))
        """))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env[ENV] = str(trusted_dir)
    env['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    proc = subprocess.run(
        [sys.executable,
         str(tool),
         str(files['untrusted']),
         str(files['trusted'])],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    refused = [line for line in lines if line.startswith('REFUSED')]
    assert len(refused) == 1 and str(files['untrusted']) in refused[0]
    assert 'UntrustedCheckpointError' in refused[0]
    assert f'{ENV}={files["untrusted"]}' in refused[0]
    assert f'LOADED {files["trusted"]}' in lines
    assert not (tmp_path / 'RAN_untrusted').exists()
    assert (tmp_path / 'RAN_trusted').exists()
