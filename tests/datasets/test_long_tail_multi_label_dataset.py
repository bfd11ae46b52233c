"""The generic long-tailed multi-label dataset on tiny generated sets."""
import os

import pytest
import torch

from mmpretrain.registry import DATASETS

from lmclip_mm.datasets.long_tail_multi_label_dataset import \
    LongTailMultiLabelDataset
from lmclip_mm.datasets.mlt_format import (DatasetFileNotFoundError,
                                           DatasetFormatError)

#: passes the build-time image check (JPEG start and end markers)
JPEG_STAND_IN = b'\xff\xd8\xff\xe0' + b'\x00' * 8 + b'\xff\xd9'

# The tiny set of conftest: classes cat(0), dog(1), 'hot dog'(2); train
# images tr0 [0, 1], tr1 [0], tr2 [2, 0], tr3 [1] -> counts 3, 2, 1.


def test_metainfo_from_train_split_for_both_splits(tiny_set):
    root, args = tiny_set()
    for split in ('train', 'test'):
        ds = LongTailMultiLabelDataset(split=split, **args)
        meta = ds.metainfo
        assert meta['classes'] == ('cat', 'dog', 'hot dog')
        assert meta['class_counts'] == [3, 2, 1]
        assert meta['num_train_images'] == 4
        # default thresholds 100 / 20: every class is tail
        assert meta['head_classes'] == []
        assert meta['middle_classes'] == []
        assert meta['tail_classes'] == [0, 1, 2]


def test_thresholds_are_configurable(tiny_set):
    root, args = tiny_set()
    ds = LongTailMultiLabelDataset(
        split='test', head_threshold=3, tail_threshold=2, **args)
    meta = ds.metainfo
    # n = 3, 2, 1: head n >= 3, middle 2 <= n < 3, tail n < 2
    assert (meta['head_classes'], meta['middle_classes'],
            meta['tail_classes']) == ([0], [1], [2])


def test_data_infos_gt_label_img_path_and_template_caption(tiny_set):
    root, args = tiny_set()
    train = LongTailMultiLabelDataset(split='train', **args)
    assert len(train) == 4
    info = train.get_data_info(2)
    assert info['img_path'] == os.path.join(str(root), 'img/tr2.jpg')
    assert info['gt_label'] == [2, 0]
    # class names in the order of the line
    assert info['caption'] == 'a photo of a hot dog, cat'
    assert [train.get_cat_ids(i) for i in range(4)] == [[0, 1], [0], [2, 0],
                                                        [1]]
    test = LongTailMultiLabelDataset(split='test', **args)
    assert len(test) == 3
    # the unlabeled test line is kept, with an empty label
    assert test.get_cat_ids(1) == []
    assert test.get_data_info(1)['caption'] == 'a photo of a '
    assert test.get_data_info(0)['caption'] == 'a photo of a dog, hot dog'


def test_caption_prefix(tiny_set):
    root, args = tiny_set()
    ds = LongTailMultiLabelDataset(
        split='train', caption_prefix='an image of ', **args)
    assert ds.get_data_info(0)['caption'] == 'an image of cat, dog'


def test_captions_from_file(tiny_set):
    root, args = tiny_set()
    ds = LongTailMultiLabelDataset(
        split='train', caption_source='file', **args)
    assert [ds.get_data_info(i)['caption'] for i in range(4)] == [
        'a cat and a dog on a sofa.', 'a cat.', 'a hot dog next to a cat.',
        'a dog.'
    ]


def test_captions_file_missing_an_image(tiny_set):
    root, args = tiny_set(captions='img/tr0.jpg a.\nimg/tr1.jpg b.\n'
                          'img/tr3.jpg d.\n')
    with pytest.raises(DatasetFormatError) as e:
        LongTailMultiLabelDataset(split='train', caption_source='file', **args)
    msg = str(e.value)
    assert str(root / 'captions.txt') in msg
    assert 'no caption for 1 of the 4 images' in msg
    assert 'line 3: img/tr2.jpg' in msg  # its line in the split file
    # the test split has no caption in this file: every image is reported
    with pytest.raises(DatasetFormatError, match='no caption for 3 of the 3'):
        LongTailMultiLabelDataset(split='test', caption_source='file', **args)


def test_caption_source_file_needs_a_file(tiny_set):
    root, args = tiny_set()
    args['captions_file'] = None
    with pytest.raises(ValueError, match='needs a captions_file'):
        LongTailMultiLabelDataset(split='train', caption_source='file', **args)
    with pytest.raises(ValueError, match='caption_source must be one of'):
        LongTailMultiLabelDataset(split='train', caption_source='x', **args)


def test_bad_split_name(tiny_set):
    root, args = tiny_set()
    with pytest.raises(ValueError, match="split must be one of"):
        LongTailMultiLabelDataset(split='valid', **args)


def test_caption_reaches_the_packed_data_sample(tiny_set):
    """A standard mmpretrain pipeline carries the caption to DataSample."""
    root, args = tiny_set()
    ds = LongTailMultiLabelDataset(
        split='train',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(4, 4)),
            dict(type='PackInputs', algorithm_keys=['caption']),
        ],
        **args)
    packed = ds[2]
    sample = packed['data_samples']
    assert packed['inputs'].shape == (3, 4, 4)
    assert sample.caption == 'a photo of a hot dog, cat'
    assert sample.gt_label.tolist() == [2, 0]
    assert sample.img_path.endswith('img/tr2.jpg')
    # an unlabeled test image packs to an empty label tensor
    test = LongTailMultiLabelDataset(
        split='test',
        pipeline=[dict(type='PackInputs', algorithm_keys=['caption'])],
        **args)
    empty = test[1]['data_samples'].gt_label
    assert isinstance(empty, torch.Tensor) and empty.numel() == 0


def test_registered_and_buildable_from_config(tiny_set):
    root, args = tiny_set()
    ds = DATASETS.build(
        dict(type='LongTailMultiLabelDataset', split='test', **args))
    assert isinstance(ds, LongTailMultiLabelDataset) and len(ds) == 3


def test_absolute_paths_and_data_prefix(tiny_set, tmp_path):
    root, _ = tiny_set()
    ds = LongTailMultiLabelDataset(
        labels_file=str(root / 'labels.txt'),
        train_file=str(root / 'train.txt'),
        test_file=str(root / 'test.txt'),
        data_root=str(tmp_path / 'elsewhere'),
        data_prefix=str(root),
        split='train')
    assert ds.get_data_info(0)['img_path'] == os.path.join(
        str(root), 'img/tr0.jpg')


def test_relative_data_root(tiny_set, monkeypatch):
    root, args = tiny_set()
    monkeypatch.chdir(root.parent)
    args['data_root'] = root.name
    ds = LongTailMultiLabelDataset(split='test', **args)
    assert ds.get_data_info(0)['img_path'] == os.path.join(
        root.name, 'img/te0.jpg')
    assert os.path.isfile(ds.get_data_info(0)['img_path'])


def test_indices_and_lazy_init(tiny_set):
    root, args = tiny_set()
    ds = LongTailMultiLabelDataset(split='train', indices=[3, 1], **args)
    assert [ds.get_cat_ids(i) for i in range(len(ds))] == [[1], [0]]
    # metainfo still describes the whole train split
    assert ds.metainfo['class_counts'] == [3, 2, 1]
    lazy = LongTailMultiLabelDataset(split='train', lazy_init=True, **args)
    assert lazy.metainfo['class_counts'] == [3, 2, 1]
    assert len(lazy) == 4


def test_metainfo_argument_may_not_contradict(tiny_set):
    root, args = tiny_set()
    ds = LongTailMultiLabelDataset(
        split='train',
        metainfo=dict(classes=['cat', 'dog', 'hot dog'], extra='x'),
        **args)
    assert ds.metainfo['extra'] == 'x'
    with pytest.raises(ValueError, match="metainfo\\['classes'\\]"):
        LongTailMultiLabelDataset(
            split='train', metainfo=dict(classes=('a', 'b', 'c')), **args)


# --------------------------------------------------------------- bad input
def test_missing_list_files(tiny_set):
    root, args = tiny_set()
    for key in ('labels_file', 'train_file', 'test_file'):
        bad = dict(args, **{key: 'nope.txt'})
        with pytest.raises(FileNotFoundError) as e:
            LongTailMultiLabelDataset(split='test', **bad)
        assert str(root / 'nope.txt') in str(e.value)
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        LongTailMultiLabelDataset(
            split='train',
            caption_source='file',
            **dict(args, captions_file='nope.txt'))


@pytest.mark.parametrize('files, split, bad_file, line_no, problem', [
    (dict(labels='cat 0\ndog\nhot dog 2\n'), 'train', 'labels.txt', 2,
     'expected 2 fields'),
    (dict(labels='cat 0\ncat 1\nhot dog 2\n'), 'train', 'labels.txt', 2,
     'duplicate class name'),
    (dict(labels='cat 0\ndog 0\nhot dog 2\n'), 'train', 'labels.txt', 2,
     'duplicate class id 0'),
    (dict(train='img/tr0.jpg 0 1\nimg/tr1.jpg 0 x\n'), 'train', 'train.txt',
     2, 'is not an integer'),
    (dict(train='img/tr0.jpg 0 1\nimg/tr1.jpg 0 3\n'), 'test', 'train.txt', 2,
     'out of range'),
    (dict(train='img/tr0.jpg 0 1 2\nimg/tr1.jpg\n'), 'test', 'train.txt', 2,
     'has no class id'),
    (dict(train='img/tr0.jpg 0 1 2\nimg/tr1.jpg 0\nimg/tr0.jpg 1\n'), 'train',
     'train.txt', 3, 'duplicate image'),
    (dict(test='img/te0.jpg 1 2\n\n img/te1.jpg 1\n'), 'test', 'test.txt', 3,
     'empty image path'),
    (dict(test='img/te0.jpg 1 2\nimg/te1.jpg 7\n'), 'test', 'test.txt', 2,
     'out of range'),
    (dict(test='img/te0.jpg 1\nimg/te1.jpg 2\nimg/te0.jpg\n'), 'test',
     'test.txt', 3, 'duplicate image'),
])
def test_malformed_files_name_file_and_line(tiny_set, files, split, bad_file,
                                            line_no, problem):
    root, args = tiny_set(**files)
    with pytest.raises(DatasetFormatError) as e:
        LongTailMultiLabelDataset(split=split, **args)
    assert f'{root / bad_file}, line {line_no}' in str(e.value)
    assert problem in str(e.value)


def test_empty_train_split(tiny_set):
    root, args = tiny_set(train='\n')
    with pytest.raises(DatasetFormatError) as e:
        LongTailMultiLabelDataset(split='test', **args)
    assert str(root / 'train.txt') in str(e.value)
    assert 'lists no image' in str(e.value)


def test_empty_test_split(tiny_set):
    root, args = tiny_set(test='')
    with pytest.raises(DatasetFormatError, match='lists no image') as e:
        LongTailMultiLabelDataset(split='test', **args)
    assert str(root / 'test.txt') in str(e.value)


def test_class_without_train_image(tiny_set):
    root, args = tiny_set(train='img/tr0.jpg 0\nimg/tr1.jpg 2\n')
    with pytest.raises(DatasetFormatError) as e:
        LongTailMultiLabelDataset(split='train', **args)
    assert str(root / 'train.txt') in str(e.value)
    assert "1 ('dog')" in str(e.value)


def test_missing_images_reported_together(tiny_set):
    test = ''.join(f'img/te{i}.jpg 0\n' for i in range(30))
    root, args = tiny_set(test=test, images=False)
    # train images exist; 25 of the 30 test images are missing, one is empty
    for i in range(4):
        (root / 'img').mkdir(exist_ok=True)
        (root / f'img/tr{i}.jpg').write_bytes(JPEG_STAND_IN)
    for i in range(5):
        (root / f'img/te{i}.jpg').write_bytes(JPEG_STAND_IN if i else b'')
    with pytest.raises(DatasetFormatError) as e:
        LongTailMultiLabelDataset(split='test', **args)
    msg = str(e.value)
    # one image exists but is damaged: not a "file not found" error
    assert not isinstance(e.value, DatasetFileNotFoundError)
    assert str(root / 'test.txt') in msg
    assert '26 of the 30 images it lists are bad: 25 missing and 1 damaged' \
        in msg
    assert f'line 1: {root}/img/te0.jpg (empty file)' in msg
    assert f'line 6: {root}/img/te5.jpg (missing)' in msg
    # bad: te0, te5 .. te29; the 20th (te23) is listed, the 21st is not
    assert 'img/te23.jpg' in msg
    assert 'img/te24.jpg' not in msg
    assert '... and 6 more' in msg
    assert 'check_images=False' not in msg  # it only moves the failure
    assert 'relative to' in msg and 'download_voc_mlt.sh' in msg
    # the train split only checks its own images
    assert len(LongTailMultiLabelDataset(split='train', **args)) == 4


def test_check_images_can_be_disabled(tiny_set):
    root, args = tiny_set(images=False)
    with pytest.raises(DatasetFileNotFoundError):
        LongTailMultiLabelDataset(split='train', **args)
    ds = LongTailMultiLabelDataset(split='train', check_images=False, **args)
    assert len(ds) == 4


def test_undecodable_image_fails_at_first_touch_naming_file_and_line(
        tiny_set):
    """An image that passes the build-time checks (JPEG start and end
    markers intact) but cannot be decoded fails when loaded, naming the
    list file, its line and the image."""
    from lmclip_mm.datasets.long_tail_multi_label_dataset import \
        LongTailMultiLabelDataset
    from lmclip_mm.datasets.mlt_format import DatasetFormatError
    root, args = tiny_set()
    bad = root / 'img' / 'tr1.jpg'
    bad.write_bytes(JPEG_STAND_IN)
    ds = LongTailMultiLabelDataset(
        **args, split='train',
        pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])
    ds[0]
    with pytest.raises(DatasetFormatError) as err:
        ds[1]
    msg = str(err.value)
    assert 'train.txt, line 2' in msg and str(bad) in msg
