"""The toy long-tailed set: generator, ToyMLT auto-generation and the CLI."""
import hashlib
import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from lmclip_mm.datasets.toy_mlt import (MARKER, ToyMLT, ensure_toy_mlt,
                                        generate_toy_mlt)
from lmclip_testing import read_split

REPO = next(p for p in Path(__file__).resolve().parents
            if (p / 'setup.py').is_file())


def tree_digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob('*')) if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(toy_root, tmp_path):
    start = time.perf_counter()
    generate_toy_mlt(str(tmp_path / 'again'), seed=0)
    took = time.perf_counter() - start
    assert took < 15, f'generation took {took:.1f} s'
    reference = tree_digest(toy_root)
    assert len(reference) > 1000
    assert tree_digest(tmp_path / 'again') == reference
    generate_toy_mlt(str(tmp_path / 'other'), seed=1)
    other = tree_digest(tmp_path / 'other')
    assert other['toy_lt_train.txt'] != reference['toy_lt_train.txt']


def test_format_long_tail_and_balanced_test(toy_root):
    labels = (toy_root / 'toy_labels.txt').read_text().splitlines()
    assert len(labels) == 20
    assert labels[0] == 'red circle 0' and labels[19] == 'yellow star 19'
    train = read_split(toy_root / 'toy_lt_train.txt')
    test = read_split(toy_root / 'toy_lt_test.txt')
    assert 600 <= len(train) <= 1000
    assert 300 <= len(test) <= 500
    for rows in (train, test):
        for _, ids in rows:
            assert 1 <= len(ids) <= 3 and len(set(ids)) == len(ids)
    counts = Counter(c for _, ids in train for c in ids)
    head = [c for c in range(20) if counts[c] >= 100]
    tail = [c for c in range(20) if counts[c] < 20]
    middle = [c for c in range(20) if 20 <= counts[c] < 100]
    assert 4 <= len(head) <= 6
    assert 6 <= len(middle) <= 8
    assert 6 <= len(tail) <= 10
    assert min(counts.values()) >= 1
    # balanced test split: every class in exactly 30 images
    assert set(Counter(c for _, ids in test for c in ids).values()) == {30}
    # captions for every image of both splits
    captions = read_split_captions(toy_root / 'toy_lt_captions.txt')
    assert set(captions) == {p for p, _ in train} | {p for p, _ in test}
    img = Image.open(toy_root / train[0][0])
    assert img.format == 'JPEG' and img.size == (64, 64) and img.mode == 'RGB'


def read_split_captions(path):
    out = {}
    with open(path) as f:
        for line in f:
            path_, caption = line.rstrip('\n').split(' ', 1)
            out[path_] = caption
    return out


def test_toy_dataset_groups_and_pipeline(toy_root):
    ds = ToyMLT(
        data_root=str(toy_root),
        split='train',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='PackInputs', algorithm_keys=['caption'])
        ])
    meta = ds.metainfo
    assert len(meta['head_classes']) == 5
    assert len(meta['middle_classes']) == 7
    assert len(meta['tail_classes']) == 8
    packed = ds[0]
    assert packed['inputs'].shape == (3, 64, 64)
    names = [meta['classes'][c] for c in ds.get_cat_ids(0)]
    assert packed['data_samples'].caption == 'a photo of a ' + ', '.join(
        names)
    test = ToyMLT(data_root=str(toy_root), split='test', caption_source='file')
    assert test.metainfo['class_counts'] == meta['class_counts']
    assert ' on a grey background.' in test.get_data_info(0)['caption']


def test_toy_generated_on_first_use_and_reused(tmp_path, monkeypatch):
    from lmclip_mm.datasets import toy_mlt
    said = []
    monkeypatch.setattr(toy_mlt, 'print_log',
                        lambda msg, **kwargs: said.append(msg))
    root = tmp_path / 'data' / 'toy_mlt'
    ds = ToyMLT(data_root=str(root), split='test')
    assert (root / MARKER).is_file()
    assert len(ds) > 0
    # said when it happens, and where
    assert said == [f'ToyMLT: generating the toy set (seed 0) into {root} '
                    '(once, a few seconds)',
                    f'ToyMLT: wrote the toy set to {root}']
    mtime = (root / 'toy_lt_train.txt').stat().st_mtime_ns
    assert ensure_toy_mlt(str(root)) is False
    ToyMLT(data_root=str(root), split='train')
    assert len(said) == 2
    assert (root / 'toy_lt_train.txt').stat().st_mtime_ns == mtime
    # no temporary folder is left behind
    assert sorted(os.listdir(tmp_path / 'data')) == ['toy_mlt']
    with pytest.raises(ValueError, match='seed=1'):
        ToyMLT(data_root=str(root), split='train', seed=1)


def test_half_written_set_is_regenerated(toy_root, tmp_path):
    root = tmp_path / 'toy'
    (root / 'images' / 'train').mkdir(parents=True)
    (root / 'toy_lt_train.txt').write_text('images/train/000000.jpg 1\n')
    assert ensure_toy_mlt(str(root)) is True
    assert tree_digest(root) == tree_digest(toy_root)


def test_existing_empty_folder_is_filled(tmp_path):
    root = tmp_path / 'toy'
    root.mkdir()
    assert ensure_toy_mlt(str(root)) is True
    assert (root / MARKER).is_file()


def test_foreign_folder_is_left_alone(tmp_path):
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'thesis.tex').write_text('precious')
    with pytest.raises(FileExistsError, match='thesis.tex'):
        ensure_toy_mlt(str(root))
    assert os.listdir(root) == ['thesis.tex']
    assert sorted(os.listdir(tmp_path)) == ['mine']


def _ensure(root, queue):
    queue.put(ensure_toy_mlt(root))


def test_two_processes_at_once(toy_root, tmp_path):
    root = str(tmp_path / 'toy')
    ctx = mp.get_context('fork')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure, args=(root, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = sorted(queue.get(timeout=5) for _ in procs)
    # one generated it; the other lost the rename race and found it
    assert results == [False, True]
    assert tree_digest(Path(root)) == tree_digest(toy_root)
    assert sorted(os.listdir(tmp_path)) == ['toy']


def test_cli(tmp_path, capsys):
    from lmclip_tools.dataset_converters import make_toy_mlt
    script = vars(make_toy_mlt)
    root = tmp_path / 'toy'
    assert script['main']([str(root), '--seed', '3']) == 0
    out = capsys.readouterr().out
    assert 'generated' in out and 'head/middle/tail 5/7/8' in out
    assert (root / MARKER).read_text() == 'toy_mlt version=1 seed=3\n'
    assert script['main']([str(root), '--seed', '3']) == 0
    assert 'already present' in capsys.readouterr().out
    assert script['main']([str(root), '--seed', '4']) == 1
    assert 'seed=4' in capsys.readouterr().err
