"""COCO-MLT: the long-tailed COCO split of Wu et al. 2020 (LMPT / LM-CLIP
files)."""
from mmpretrain.registry import DATASETS

from .long_tail_multi_label_dataset import LongTailMultiLabelDataset


@DATASETS.register_module()
class COCOMLT(LongTailMultiLabelDataset):
    """COCO-MLT: 1,909 train images (COCO2017 train), 5,000 test images
    (COCO2017 val, 48 of them without label), 80 classes; head/middle/tail
    22/33/25.

    Expected layout (see ``data/README.md``)::

        data_root/
            longtail2017/coco_labels.txt, coco_lt_train.txt,
                         coco_lt_test.txt, coco_lt_captions.txt
            train2017/*.jpg
            val2017/*.jpg

    Config: ``dict(type='COCOMLT', data_root='data/coco_mlt', split='train',
    pipeline=[...])``. Every other argument of
    :class:`LongTailMultiLabelDataset` is accepted.

    ``split='val'`` / ``holdout_val=True``: the held-out validation split
    (see :class:`LongTailMultiLabelDataset`).
    """

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 labels_file: str = 'longtail2017/coco_labels.txt',
                 train_file: str = 'longtail2017/coco_lt_train.txt',
                 test_file: str = 'longtail2017/coco_lt_test.txt',
                 captions_file: str = 'longtail2017/coco_lt_captions.txt',
                 **kwargs):
        super().__init__(
            labels_file=labels_file,
            train_file=train_file,
            test_file=test_file,
            captions_file=captions_file,
            data_root=data_root,
            split=split,
            **kwargs)
