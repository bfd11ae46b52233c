"""Shared fixtures of the dataset tests: the real split files and tiny sets."""
from pathlib import Path

import pytest
from PIL import Image


def _real_root(dataset: str) -> Path:
    from lmclip_testing import real_data_dir
    found = real_data_dir(dataset)
    if found is None:
        pytest.skip(f'the real {dataset} split files are absent (run '
                    'data/download_*.sh or set LMCLIP_DATA_DIR)')
    return found / dataset


@pytest.fixture(scope='session')
def voc_root() -> Path:
    """``voc_mlt/`` with the real VOC-MLT split files (else skip)."""
    return _real_root('voc_mlt')


@pytest.fixture(scope='session')
def coco_root() -> Path:
    """``coco_mlt/`` with the real COCO-MLT split files (else skip)."""
    return _real_root('coco_mlt')


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
