import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TINY_CFG = REPO / 'tests' / 'data' / 'tiny_cls.py'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='session')
def tiny_image_root(tmp_path_factory):
    """Two visually separable classes (dark / bright), 8 train, 6 val."""
    root = tmp_path_factory.mktemp('tiny_cls')
    rng = np.random.default_rng(0)
    for split, n in (('train', 8), ('val', 6)):
        for cls, base in (('dark', 40), ('bright', 210)):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n // 2):
                img = np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(d / f'{i}.png')
    return root


def data_root_options(root):
    return [
        f'{k}.dataset.data_root={root}'
        for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]


def run_tool(args, cwd=REPO, timeout=600, env=None, check=True):
    """Run a tools/ script in a fresh interpreter; return CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    full_env['PYTHONUNBUFFERED'] = '1'
    if env:
        full_env.update(env)
    if args[0].endswith('.sh'):
        cmd = ['bash', str(REPO / 'tools' / args[0])] + [str(a) for a in args[1:]]
        full_env['PYTHON'] = sys.executable
    else:
        cmd = [sys.executable, str(REPO / 'tools' / args[0])] + [
            str(a) for a in args[1:]
        ]
    proc = subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(cmd)} failed ({proc.returncode}):\n'
            f'{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc


@pytest.fixture(scope='session')
def tool():
    """``tool(args, ...)`` runs a script of tools/ (see :func:`run_tool`)."""
    return run_tool


@pytest.fixture(scope='session')
def tiny_cfg():
    return TINY_CFG


@pytest.fixture(scope='session')
def tiny_options(tiny_image_root):
    return data_root_options(tiny_image_root)


@pytest.fixture
def port():
    return free_port()


@pytest.fixture(scope='session')
def new_port():
    """``new_port()`` gives a free loopback port (for module fixtures and
    tests that launch several distributed runs)."""
    return free_port


def load_checkpoint_file(path):
    """An mmengine checkpoint, loaded as the tools load it (weights-only,
    with lmclip_mm's allow-list)."""
    import lmclip_mm  # noqa: F401  (allow-lists mmengine's globals)
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(str(path), map_location='cpu')


@pytest.fixture(scope='session')
def load_ckpt():
    """``load_ckpt(path)``: see :func:`load_checkpoint_file`."""
    return load_checkpoint_file
