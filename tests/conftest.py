"""Root fixtures of the test suite.

Every test runs with one torch thread (:func:`one_torch_thread`: tiny
models are as fast, and they are not slowed down 50x by OpenMP spinning
when the other pytest-xdist worker shares the cores); one toy set is
generated per session (:func:`toy_root`). Paths and tool runners are
plain functions in ``tests/helpers/lmclip_testing.py``.

The image cache (``lmclip_mm.datasets.image_cache``) of every dataset the
tests build, in this process, in pytest-xdist workers and in the tools the
tests run as subprocesses, goes to one temporary folder for the whole run
(``$LMCLIP_CACHE_DIR``), never to the user's ``~/.cache``.
"""
import os
import shutil
import tempfile

import pytest

_OWNED = '_LMCLIP_TEST_CACHE_OWNER'


def pytest_collection_modifyitems(session, config, items):
    """Heavy test files first, heaviest first (``pytestmark =
    pytest.mark.heavy(seconds)``): with ``--dist loadfile`` the workers take
    files in this order, so a long file does not start last and finish
    alone. Within a file, and among the other files, the order is kept."""
    def weight(item):
        mark = item.get_closest_marker('heavy')
        return -(mark.args[0] if mark and mark.args else 0)

    items.sort(key=weight)  # stable


def pytest_configure(config):
    if os.environ.get(_OWNED):  # an xdist worker: the controller's folder
        return
    path = tempfile.mkdtemp(prefix='lmclip_test_cache_')
    os.environ['LMCLIP_CACHE_DIR'] = path
    os.environ[_OWNED] = str(os.getpid())
    config._lmclip_cache_dir = path


def pytest_unconfigure(config):
    import tool_server
    tool_server.shutdown()
    path = getattr(config, '_lmclip_cache_dir', None)
    if path and os.environ.get(_OWNED) == str(os.getpid()):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def own_environment():
    """What a test changes in ``os.environ`` (a tool's ``main()`` run in
    this process sets ``LOCAL_RANK``) ends with it: a later test sees the
    session's environment, and the tools it runs still fork from the tool
    server (:mod:`tool_server` starts a fresh interpreter for a call whose
    environment differs from the server's)."""
    saved = dict(os.environ)
    yield
    now = dict(os.environ)
    for env in (saved, now):  # pytest's own, set for each phase
        env.pop('PYTEST_CURRENT_TEST', None)
    if now != saved:
        for key in set(now) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


@pytest.fixture(autouse=True, scope='session')
def one_torch_thread():
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory):
    """One toy set (:class:`~lmclip_mm.datasets.ToyMLT`, seed 0) for the
    whole session."""
    from lmclip_mm.datasets.toy_mlt import generate_toy_mlt
    root = tmp_path_factory.mktemp('toy') / 'toy_mlt'
    generate_toy_mlt(str(root), seed=0)
    return root


def _sklearn_photo(name):
    """One of the two real photos scikit-learn ships (427x640 JPEGs)."""
    import sklearn.datasets
    return os.path.join(os.path.dirname(sklearn.datasets.__file__), 'images',
                        name)


@pytest.fixture(scope='session')
def real_photos(tmp_path_factory):
    """``{name: path}``: scikit-learn's two photos as shipped, and files
    derived from them in the modes a dataset meets: an EXIF-rotated JPEG
    (orientation 6), a grayscale JPEG, a CMYK JPEG, an RGBA PNG, an 'LA'
    PNG, a palette PNG and a small JPEG (upsampled to 224)."""
    from PIL import Image
    root = tmp_path_factory.mktemp('real_photos')
    china, flower = _sklearn_photo('china.jpg'), _sklearn_photo('flower.jpg')
    photos = {}
    for name, src in (('china', china), ('flower', flower)):
        photos[name] = str(root / f'{name}.jpg')
        shutil.copyfile(src, photos[name])
    with Image.open(china) as c, Image.open(flower) as f:
        exif = Image.Exif()
        exif[0x0112] = 6
        derived = {
            'exif6.jpg': (c, dict(exif=exif.tobytes(), quality=92)),
            'gray.jpg': (f.convert('L'), dict(quality=90)),
            'cmyk.jpg': (c.convert('CMYK'), dict(quality=90)),
            'la.png': (c.convert('LA'), {}),
            'palette.png': (f.convert('P'), {}),
            'small.jpg': (c.resize((150, 100)), dict(quality=90)),
        }
        rgba = f.convert('RGBA')
        alpha = Image.linear_gradient('L').resize(rgba.size)
        rgba.putalpha(alpha)
        derived['rgba.png'] = (rgba, {})
        for file, (img, kwargs) in derived.items():
            path = str(root / file)
            img.save(path, **kwargs)
            photos[file.split('.')[0]] = path
    with Image.open(photos['exif6']) as img:
        assert img.getexif()[0x0112] == 6
    with Image.open(photos['cmyk']) as img:
        assert img.mode == 'CMYK'
    return photos
