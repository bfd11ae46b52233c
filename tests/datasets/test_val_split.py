"""The held-out validation split (split='val', holdout_val=True)."""
import numpy as np
import pytest
from mmpretrain.registry import DATASETS

from lmclip_mm.datasets import COCOMLT, VOCMLT, LongTailMultiLabelDataset
from lmclip_mm.datasets.val_split import (stratified_val_indices,
                                          val_split_table)

from .conftest import tiny_args, write_set


def _long_tail_train(num_images=300, num_classes=12, seed=1):
    """A long-tailed multi-label train list (class c in ~ 150 / 1.5**c)."""
    rng = np.random.default_rng(seed)
    p = 0.5 / 1.5**np.arange(num_classes)
    lines = []
    for i in range(num_images):
        labels = np.flatnonzero(rng.random(num_classes) < p).tolist()
        if not labels:
            labels = [0]
        # every class appears at least twice
        if i < 2 * num_classes:
            labels = sorted(set(labels) | {i % num_classes})
        lines.append(f'img/tr{i:04d}.jpg ' + ' '.join(map(str, labels)))
    return '\n'.join(lines) + '\n'


@pytest.fixture
def lt_set(tmp_path):
    num_classes = 12
    labels = ''.join(f'class{c} {c}\n' for c in range(num_classes))
    root = write_set(tmp_path / 'lt', labels=labels,
                     train=_long_tail_train(num_classes=num_classes),
                     test='img/te0.jpg 0\n', captions=None, images=False)
    args = tiny_args(root, captions_file=None, check_images=False)
    return args


def _paths(ds):
    return [ds.get_data_info(i)['img_path'] for i in range(len(ds))]


def _labels(ds):
    return [tuple(ds.get_data_info(i)['gt_label']) for i in range(len(ds))]


def test_val_and_heldout_train_partition_the_train_list(lt_set):
    full = LongTailMultiLabelDataset(**lt_set, split='train')
    val = LongTailMultiLabelDataset(**lt_set, split='val')
    train = LongTailMultiLabelDataset(**lt_set, split='train',
                                      holdout_val=True)
    full_paths, val_paths, train_paths = _paths(full), _paths(val), \
        _paths(train)
    assert len(full) == 300
    assert set(val_paths).isdisjoint(train_paths)
    assert sorted(val_paths + train_paths) == sorted(full_paths)
    # both keep the order of the train list, and the line numbers
    assert val_paths == [p for p in full_paths if p in set(val_paths)]
    assert train_paths == [p for p in full_paths if p in set(train_paths)]
    line_of = {full.get_data_info(i)['img_path']:
               full.get_data_info(i)['line_no'] for i in range(len(full))}
    for ds in (val, train):
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            assert info['line_no'] == line_of[info['img_path']]
    # about 10 % (the default fraction) held out
    assert 25 <= len(val) <= 35
    assert val.val_indices == train.val_indices
    assert [full_paths[i] for i in val.val_indices] == val_paths
    # val is evaluated: test_mode by default; the held-out train is not
    assert val.test_mode and not train.test_mode and not full.test_mode


def test_metainfo_groups_from_the_full_list_counts_from_trained(lt_set):
    full = LongTailMultiLabelDataset(**lt_set, split='train')
    assert full.metainfo['num_train_images'] == 300
    val = LongTailMultiLabelDataset(**lt_set, split='val')
    held_out = LongTailMultiLabelDataset(**lt_set, split='train',
                                         holdout_val=True)
    test = LongTailMultiLabelDataset(**lt_set, split='test')
    assert test.metainfo == full.metainfo
    # the held-out train and the val split: counts of the images trained
    # on (the held-out train's), groups and classes of the full list
    trained = np.zeros(12, int)
    for labels in _labels(held_out):
        trained[list(labels)] += 1
    for ds in (val, held_out):
        meta = dict(ds.metainfo)
        assert meta.pop('class_counts') == trained.tolist()
        assert meta.pop('num_train_images') == len(held_out) == 300 - len(
            val)
        expected = dict(full.metainfo)
        del expected['class_counts'], expected['num_train_images']
        assert meta == expected
        assert ds.train_list_counts == full.metainfo['class_counts']
        assert ds.num_train_list_images == 300


def test_default_train_is_the_full_list_and_needs_no_draw(lt_set):
    full = LongTailMultiLabelDataset(**lt_set, split='train')
    assert len(full) == 300 and full.val_indices is None
    test = LongTailMultiLabelDataset(**lt_set, split='test', holdout_val=True)
    assert len(test) == 1 and test.val_indices is None


def test_stratified_every_class_keeps_its_share(lt_set):
    full = LongTailMultiLabelDataset(**lt_set, split='train')
    val = LongTailMultiLabelDataset(**lt_set, split='val', val_fraction=0.2,
                                    val_seed=3)
    counts = np.zeros(12, int)
    for labels in _labels(val):
        counts[list(labels)] += 1
    n = np.asarray(full.metainfo['class_counts'])
    # every class within one image of its 20 % share (a plain random draw of
    # 60 images misses this for some class almost always)
    assert np.all(np.abs(counts - 0.2 * n) <= 1.0 + 1e-9), (counts, n)


def test_seed_and_fraction(lt_set):
    a = LongTailMultiLabelDataset(**lt_set, split='val', val_seed=0)
    b = LongTailMultiLabelDataset(**lt_set, split='val', val_seed=0)
    c = LongTailMultiLabelDataset(**lt_set, split='val', val_seed=1)
    d = LongTailMultiLabelDataset(**lt_set, split='val', val_fraction=0.3)
    assert _paths(a) == _paths(b)
    assert _paths(a) != _paths(c)
    assert 80 <= len(d) <= 100
    # the held-out train follows the same seed / fraction
    t = LongTailMultiLabelDataset(**lt_set, split='train', holdout_val=True,
                                  val_fraction=0.3)
    assert len(t) + len(d) == 300 and set(_paths(t)).isdisjoint(_paths(d))


@pytest.mark.parametrize('kwargs, match', [
    (dict(val_fraction=0), 'val_fraction'),
    (dict(val_fraction=1.0), 'val_fraction'),
    (dict(val_fraction=True), 'val_fraction'),
    (dict(val_fraction='0.1'), 'val_fraction'),
    (dict(val_seed=-1), 'val_seed'),
    (dict(val_seed=1.5), 'val_seed'),
    (dict(holdout_val=1), 'holdout_val'),
    (dict(split='valid'), 'split'),
])
def test_bad_arguments(lt_set, kwargs, match):
    kwargs = dict(dict(split='val'), **kwargs)
    with pytest.raises(ValueError, match=match):
        LongTailMultiLabelDataset(**lt_set, **kwargs)


def test_fraction_too_small_for_the_list(tmp_path):
    root = write_set(tmp_path / 's', train='a.jpg 0\nb.jpg 1\nc.jpg 2\n',
                     captions=None, images=False)
    args = tiny_args(root, captions_file=None, check_images=False)
    with pytest.raises(ValueError, match='no image in val or none in train'):
        LongTailMultiLabelDataset(**args, split='val', val_fraction=0.9999)


def test_check_images_only_checks_the_split(tiny_set, tmp_path):
    # 4 train images; with a 0.5 fraction val holds two of them. A missing
    # image of the held-out train part must not fail the val split.
    root, args = tiny_set()
    val = LongTailMultiLabelDataset(**args, split='val', val_fraction=0.5)
    train = LongTailMultiLabelDataset(**args, split='train',
                                      holdout_val=True, val_fraction=0.5)
    assert len(val) + len(train) == 4
    missing = train.get_data_info(0)['img_path']
    import os
    os.remove(missing)
    assert len(LongTailMultiLabelDataset(**args, split='val',
                                         val_fraction=0.5)) == len(val)
    with pytest.raises(FileNotFoundError):
        LongTailMultiLabelDataset(**args, split='train', holdout_val=True,
                                  val_fraction=0.5)


def test_caption_file_and_pipeline_on_val(tiny_set):
    root, args = tiny_set()
    val = LongTailMultiLabelDataset(
        **args, split='val', val_fraction=0.5, caption_source='file',
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='PackInputs', algorithm_keys=['caption'])])
    out = val[0]
    assert out['inputs'].shape[-2:] == (8, 8)
    assert out['data_samples'].caption.endswith('.')


def test_registry_toy_mlt_val(toy_root):
    cfg = dict(type='ToyMLT', data_root=str(toy_root))
    full = DATASETS.build(dict(cfg, split='train'))
    val = DATASETS.build(dict(cfg, split='val'))
    train = DATASETS.build(dict(cfg, split='train', holdout_val=True))
    assert len(val) + len(train) == len(full) == 804
    assert set(_paths(val)).isdisjoint(_paths(train))
    assert val.metainfo == train.metainfo
    assert val.metainfo['num_train_images'] == len(train)
    # every toy class (train counts 4 .. 280) keeps its share within 1
    counts = np.zeros(20, int)
    for labels in _labels(val):
        counts[list(labels)] += 1
    n = np.asarray(full.metainfo['class_counts'])
    assert np.all(np.abs(counts - 0.1 * n) <= 1.0 + 1e-9), (counts, n)


def _check_real(ds_cls, root, num_train, num_val):
    full = ds_cls(data_root=str(root), split='train', check_images=False)
    val = ds_cls(data_root=str(root), split='val', check_images=False)
    train = ds_cls(data_root=str(root), split='train', holdout_val=True,
                   check_images=False)
    assert len(full) == num_train and len(val) == num_val
    assert len(train) == num_train - num_val
    assert set(_paths(val)).isdisjoint(_paths(train))
    table = val_split_table(_labels(full), len(full.metainfo['classes']),
                            val.val_indices)
    n = np.array([row['total'] for row in table])
    v = np.array([row['val'] for row in table])
    assert n.tolist() == full.metainfo['class_counts']
    # every class of at least 5 images has one in val; the tail classes
    # (n_c < 20) keep 0-2 val images, within one of their 10 % share
    assert np.all(v[n >= 5] >= 1)
    tail = n < 20
    assert np.all(np.abs(v[tail] - 0.1 * n[tail]) <= 1.0)
    # classes below 50 images: within one image of their share
    assert np.all(np.abs(v[n < 50] - 0.1 * n[n < 50]) <= 1.0)
    return v


def test_voc_mlt_val_split(voc_root):
    v = _check_real(VOCMLT, voc_root, 1142, 111)
    assert v.sum() >= 111


def test_coco_mlt_val_split(coco_root):
    _check_real(COCOMLT, coco_root, 1909, 202)


def test_stratified_indices_function():
    labels = [[0]] * 50 + [[1]] * 40 + [[0, 1]] * 10
    val = stratified_val_indices(labels, 2, 0.1, 0)
    assert list(val) == sorted(val)
    y = np.array([[0 in s, 1 in s] for s in labels])
    assert abs(y[val, 0].sum() - 6) <= 1 and abs(y[val, 1].sum() - 5) <= 1
    # a single class still works (the package wants >= 2 columns)
    val1 = stratified_val_indices([[0]] * 20, 1, 0.25, 0)
    assert len(val1) == 5


def _report_main():
    from lmclip_tools.dataset_converters import val_split_report
    return val_split_report.main


def test_val_split_report_cli(toy_root, capsys):
    main = _report_main()
    assert main(['ToyMLT', str(toy_root), '--format', 'tsv',
                 '--val-seed', '2']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split('\t') == ['id', 'class', 'group',
                                    'n_c (train list)', 'train', 'val']
    rows = [line.split('\t') for line in lines[1:-1]]
    assert len(rows) == 20
    val = DATASETS.build(dict(type='ToyMLT', data_root=str(toy_root),
                              split='val', val_seed=2))
    full = DATASETS.build(dict(type='ToyMLT', data_root=str(toy_root)))
    counts = np.zeros(20, int)
    for labels in _labels(val):
        counts[list(labels)] += 1
    for row in rows:
        c, n, tr, v = int(row[0]), int(row[3]), int(row[4]), int(row[5])
        assert n == full.metainfo['class_counts'][c] == tr + v
        assert v == counts[c]
        assert row[2] == ('head' if n >= 100 else 'tail' if n < 20
                          else 'middle')
    # most frequent class first
    assert [int(r[3]) for r in rows] == sorted((int(r[3]) for r in rows),
                                               reverse=True)
    assert lines[-1].startswith(f'ToyMLT: {len(val)} of 804 train images')
    assert 'val_seed=2' in lines[-1]


def test_val_split_report_markdown_on_voc(voc_root, capsys):
    assert _report_main()(['VOCMLT', str(voc_root)]) == 0
    out = capsys.readouterr().out
    assert '| 14 | person | head | 775 |' in out
    assert out.strip().splitlines()[-1].startswith(
        'VOCMLT: 111 of 1142 train images held out as val')


def test_val_split_report_bad_input(tmp_path, capsys):
    assert _report_main()(['VOCMLT', str(tmp_path / 'nothing')]) == 1
    assert 'val_split_report:' in capsys.readouterr().err
