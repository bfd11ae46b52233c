"""VOCMLT on the real VOC-MLT split files (../shared/data/voc_mlt)."""
import os

import pytest
from mmpretrain.registry import DATASETS

from lmclip_mm.datasets.mlt_format import DatasetFileNotFoundError
from lmclip_mm.datasets.voc_mlt import VOCMLT
from lmclip_testing import read_split


def test_counts_and_published_class_groups(voc_root):
    lt = voc_root / 'longtail2012'
    train_rows = read_split(lt / 'voc_lt_train.txt')
    counts = [0] * 20
    for _, ids in train_rows:
        for c in ids:
            counts[c] += 1
    train = VOCMLT(data_root=str(voc_root), split='train', check_images=False)
    test = VOCMLT(data_root=str(voc_root), split='test', check_images=False)
    assert len(train) == 1142
    assert len(test) == 4952
    for ds in (train, test):
        meta = ds.metainfo
        assert len(meta['classes']) == 20
        assert meta['classes'][0] == 'aeroplane'
        assert meta['classes'][1] == 'bicycle'  # 'bicycle 1 ' in the file
        assert meta['classes'][19] == 'tvmonitor'
        assert meta['num_train_images'] == 1142
        assert meta['class_counts'] == counts
        # the published VOC-MLT split: 6 head, 6 middle, 8 tail classes
        assert len(meta['head_classes']) == 6
        assert len(meta['middle_classes']) == 6
        assert len(meta['tail_classes']) == 8
        assert meta['head_classes'] == [c for c in range(20)
                                        if counts[c] >= 100]
        assert meta['tail_classes'] == [c for c in range(20)
                                        if counts[c] < 20]
    # get_cat_ids follows the lines
    test_rows = read_split(lt / 'voc_lt_test.txt')
    for idx in (0, 1, 2500, 4951):
        assert test.get_cat_ids(idx) == test_rows[idx][1]
        assert test.get_data_info(idx)['img_path'] == os.path.join(
            str(voc_root), test_rows[idx][0])


def test_captions(voc_root):
    ds = VOCMLT(data_root=str(voc_root), split='train', check_images=False)
    # line 1: VOCdevkit/VOC2012/JPEGImages/2008_000023.jpg 14 4 19
    assert ds.get_data_info(0)['caption'] == \
        'a photo of a person, bottle, tvmonitor'
    ds = VOCMLT(
        data_root=str(voc_root),
        split='train',
        check_images=False,
        caption_source='file')
    assert ds.get_data_info(0)['caption'] == (
        'a bottle of beer and a candle on a table with pizza and a '
        'television.')


def test_images_checked_when_built(voc_root, tmp_path):
    """With the images present (tiny stand-ins) the check passes; one
    missing image makes it fail, naming the split file and the line."""
    (tmp_path / 'longtail2012').symlink_to(voc_root / 'longtail2012')
    rows = read_split(voc_root / 'longtail2012' / 'voc_lt_train.txt')
    for path, _ in rows:
        p = tmp_path / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'\xff\xd8\xff\xe0\xff\xd9')  # JPEG markers
    cfg = dict(type='VOCMLT', data_root=str(tmp_path), split='train')
    assert len(DATASETS.build(cfg)) == 1142
    os.remove(tmp_path / rows[9][0])
    with pytest.raises(DatasetFileNotFoundError) as e:
        DATASETS.build(cfg)
    assert 'voc_lt_train.txt' in str(e.value)
    assert f'line 10: {tmp_path / rows[9][0]} (missing)' in str(e.value)
    assert '1 of the 1142 images' in str(e.value)
