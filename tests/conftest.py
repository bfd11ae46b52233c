"""Root fixtures of the test suite.

The image cache (``lmclip_mm.datasets.image_cache``) of every dataset the
tests build, in this process, in pytest-xdist workers and in the tools the
tests run as subprocesses, goes to one temporary folder for the whole run
(``$LMCLIP_CACHE_DIR``), never to the user's ``~/.cache``.
"""
import os
import shutil
import tempfile

_OWNED = '_LMCLIP_TEST_CACHE_OWNER'


def pytest_configure(config):
    if os.environ.get(_OWNED):  # an xdist worker: the controller's folder
        return
    path = tempfile.mkdtemp(prefix='lmclip_test_cache_')
    os.environ['LMCLIP_CACHE_DIR'] = path
    os.environ[_OWNED] = str(os.getpid())
    config._lmclip_cache_dir = path


def pytest_unconfigure(config):
    path = getattr(config, '_lmclip_cache_dir', None)
    if path and os.environ.get(_OWNED) == str(os.getpid()):
        shutil.rmtree(path, ignore_errors=True)
