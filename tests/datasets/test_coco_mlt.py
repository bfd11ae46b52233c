"""COCOMLT on the real COCO-MLT split files (../shared/data/coco_mlt)."""
from lmclip_mm.datasets.coco_mlt import COCOMLT
from lmclip_testing import read_split


def test_counts_and_published_class_groups(coco_root):
    lt = coco_root / 'longtail2017'
    counts = [0] * 80
    for _, ids in read_split(lt / 'coco_lt_train.txt'):
        for c in ids:
            counts[c] += 1
    train = COCOMLT(data_root=str(coco_root), split='train',
                    check_images=False)
    test = COCOMLT(data_root=str(coco_root), split='test', check_images=False)
    assert len(train) == 1909
    assert len(test) == 5000
    for ds in (train, test):
        meta = ds.metainfo
        assert len(meta['classes']) == 80
        assert meta['classes'][9] == 'traffic light'  # a name with a space
        assert meta['num_train_images'] == 1909
        assert meta['class_counts'] == counts
        # the published COCO-MLT split: 22 head, 33 middle, 25 tail classes
        assert len(meta['head_classes']) == 22
        assert len(meta['middle_classes']) == 33
        assert len(meta['tail_classes']) == 25


def test_unlabeled_test_lines_are_kept(coco_root):
    rows = read_split(coco_root / 'longtail2017' / 'coco_lt_test.txt')
    unlabeled = [i for i, (_, ids) in enumerate(rows) if not ids]
    assert len(unlabeled) == 48
    test = COCOMLT(data_root=str(coco_root), split='test', check_images=False)
    assert [i for i in range(len(test)) if not test.get_cat_ids(i)] == \
        unlabeled
    assert test.get_data_info(unlabeled[0])['gt_label'] == []
    assert test.get_cat_ids(0) == rows[0][1]


def test_captions_from_file(coco_root):
    ds = COCOMLT(
        data_root=str(coco_root),
        split='train',
        check_images=False,
        caption_source='file')
    assert ds.get_data_info(0)['caption'].startswith(
        'a boy wearing headphones using one computer')
