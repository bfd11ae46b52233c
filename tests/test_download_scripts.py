"""data/download_*.sh against a local HTTP server (no internet here).

The split files are served from ../shared/data: the scripts must fetch and
verify them (sha256), refuse a corrupted one, and fail clearly when the image
archives cannot be downloaded.
"""
import functools
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared' / 'data'


@pytest.fixture
def server(tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def _run(script, root, env):
    return subprocess.run(['bash', str(REPO / 'data' / script), str(root)],
                          env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(not SHARED.is_dir(), reason='needs ../shared/data')
@pytest.mark.parametrize('script,sub,names', [
    ('download_voc_mlt.sh', 'voc_mlt/longtail2012', 'voc'),
    ('download_coco_mlt.sh', 'coco_mlt/longtail2017', 'coco'),
])
def test_split_files_fetched_and_verified(script, sub, names, server,
                                          tmp_path):
    served, url = server
    for f in (SHARED / sub).iterdir():
        (served / f.name).write_bytes(f.read_bytes())
    env = dict(SPLITS_BASE_URL=url, VOC_URL=f'{url}/nothing',
               COCO_URL=f'{url}/nothing')
    root = tmp_path / 'root'
    proc = _run(script, root, env)
    # the split files arrive, verified; the (absent) images then fail
    assert proc.returncode != 0
    for f in (SHARED / sub).iterdir():
        got = root / sub.split('/')[1] / f.name
        assert got.read_bytes() == f.read_bytes()
    assert f'download_{names}_mlt: ' in proc.stderr
    assert 'failed' in proc.stderr

    # a corrupted split file upstream is refused, naming the file
    (served / f'{names}_labels.txt').write_text('cat 0\n')
    root2 = tmp_path / 'root2'
    proc = _run(script, root2, env)
    assert proc.returncode != 0
    assert f'{names}_labels.txt.part: sha256 is' in proc.stderr
    assert not (root2 / sub.split('/')[1] / f'{names}_labels.txt').exists()


@pytest.mark.parametrize('script', ['download_voc_mlt.sh',
                                    'download_coco_mlt.sh'])
def test_failed_download_leaves_nothing_that_looks_like_data(script,
                                                             tmp_path):
    """Offline: the run fails clearly and removes the folders it created
    (the real-data tests must not take them for data); a folder that was
    there before stays, with what the user had in it."""
    from lmclip_testing import free_port, has_split_files
    nowhere = f'http://127.0.0.1:{free_port()}'  # nothing listens there
    env = dict(SPLITS_BASE_URL=nowhere, VOC_URL=nowhere, COCO_URL=nowhere)
    root = tmp_path / 'fresh' / 'data_mlt'
    proc = _run(script, root, env)
    assert proc.returncode != 0
    assert 'failed' in proc.stderr
    assert not root.exists(), sorted(str(p) for p in root.rglob('*'))
    # the parent the user named was there: kept
    assert (tmp_path / 'fresh').is_dir()

    existing = tmp_path / 'mine'
    existing.mkdir()
    (existing / 'notes.txt').write_text('mine')
    proc = _run(script, existing, env)
    assert proc.returncode != 0
    assert sorted(p.name for p in existing.iterdir()) == ['notes.txt']
    dataset = script[len('download_'):-len('.sh')]
    assert not has_split_files(tmp_path, dataset)
