"""Fixtures of the tool tests (paths and runners: ``lmclip_testing``)."""
import numpy as np
import pytest
from lmclip_testing import (REPO, TINY_CFG, data_root_options,  # noqa: F401
                            free_port, load_checkpoint_file, run_tool)
from PIL import Image


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


@pytest.fixture(scope='session')
def load_ckpt():
    """``load_ckpt(path)``: see :func:`load_checkpoint_file`."""
    return load_checkpoint_file
