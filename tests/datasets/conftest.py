"""Shared fixtures of the dataset tests: the real split files and tiny sets."""
from pathlib import Path

import pytest
from PIL import Image


def _repo_root() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / 'setup.py').is_file():
            return parent
    raise RuntimeError('cannot locate the repository root (setup.py)')


def _split_data_dir() -> Path:
    """Where the real VOC-MLT / COCO-MLT split files are: ``$LMCLIP_DATA_DIR``,
    else the repository's ``data/`` once ``data/download_*.sh`` ran, else the
    developers' ``../shared/data`` beside the checkout."""
    import os
    candidates = [Path(p) for p in [os.environ.get('LMCLIP_DATA_DIR')] if p]
    candidates += [_repo_root() / 'data', _repo_root() / '..' / 'shared' /
                   'data']
    for path in candidates:
        if (path / 'voc_mlt' / 'longtail2012').is_dir() and \
                (path / 'coco_mlt' / 'longtail2017').is_dir():
            return path.resolve()
    return candidates[0].resolve()


SHARED_DATA = _split_data_dir()


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """The folder with ``voc_mlt/`` and ``coco_mlt/`` split files."""
    if not (SHARED_DATA / 'voc_mlt').is_dir():
        pytest.skip('the real VOC-MLT / COCO-MLT split files are absent '
                    '(run data/download_*.sh or set LMCLIP_DATA_DIR)')
    return SHARED_DATA


@pytest.fixture(scope='session')
def voc_root(shared_data) -> Path:
    return shared_data / 'voc_mlt'


@pytest.fixture(scope='session')
def coco_root(shared_data) -> Path:
    return shared_data / 'coco_mlt'


#: a small valid set: 3 classes, train counts a=3, b=2, c=1 over 4 images.
TINY_LABELS = 'cat 0\ndog 1 \r\nhot dog 2\n'
TINY_TRAIN = ('img/tr0.jpg 0 1\n'
              'img/tr1.jpg 0\n'
              'img/tr2.jpg 2 0\n'
              'img/tr3.jpg 1\n')
TINY_TEST = ('img/te0.jpg 1 2\n'
             'img/te1.jpg\n'
             'img/te2.jpg 0\n')
TINY_CAPTIONS = ('img/tr0.jpg a cat and a dog on a sofa.\n'
                 'img/tr1.jpg a cat.\n'
                 'img/tr2.jpg a hot dog next to a cat.\n'
                 'img/tr3.jpg a dog.\n')


def write_set(root: Path,
              labels: str = TINY_LABELS,
              train: str = TINY_TRAIN,
              test: str = TINY_TEST,
              captions: str = TINY_CAPTIONS,
              images: bool = True) -> Path:
    """Write the list files (and tiny images for every listed path)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (('labels.txt', labels), ('train.txt', train),
                       ('test.txt', test), ('captions.txt', captions)):
        if text is not None:
            (root / name).write_bytes(text.encode('utf-8'))
    if images:
        for text in (train, test):
            for line in (text or '').splitlines():
                fields = line.split()
                if not fields or line[0].isspace():
                    continue
                path = root / fields[0]
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    Image.new('RGB', (8, 8), (200, 30, 30)).save(path)
    return root


def tiny_args(root: Path, **kwargs) -> dict:
    args = dict(
        data_root=str(root),
        labels_file='labels.txt',
        train_file='train.txt',
        test_file='test.txt',
        captions_file='captions.txt')
    args.update(kwargs)
    return args


@pytest.fixture
def tiny_set(tmp_path):
    """Factory: ``tiny_set(**overrides) -> (root, constructor kwargs)``."""

    def make(**overrides):
        root = write_set(tmp_path / 'set', **overrides)
        return root, tiny_args(root)

    return make
