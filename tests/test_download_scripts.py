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
