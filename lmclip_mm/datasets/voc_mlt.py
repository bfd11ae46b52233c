"""VOC-MLT: the long-tailed VOC split of Wu et al. 2020 (LMPT / LM-CLIP
files)."""
from mmpretrain.registry import DATASETS

from .long_tail_multi_label_dataset import LongTailMultiLabelDataset


@DATASETS.register_module()
class VOCMLT(LongTailMultiLabelDataset):
    """VOC-MLT: 1,142 train images (VOC2012 trainval), 4,952 test images
    (VOC2007 test), 20 classes; head/middle/tail 6/6/8.

    Expected layout (see ``data/README.md``)::

        data_root/
            longtail2012/voc_labels.txt, voc_lt_train.txt, voc_lt_test.txt,
                         voc_lt_captions.txt
            VOCdevkit/VOC2012/JPEGImages/*.jpg   (train images)
            VOCdevkit/VOC2007/JPEGImages/*.jpg   (test images)

    Config: ``dict(type='VOCMLT', data_root='data/voc_mlt', split='train',
    pipeline=[...])``. Every other argument of
    :class:`LongTailMultiLabelDataset` (``caption_source``,
    ``check_images``, the thresholds, the file paths, ...) is accepted.

    ``split`` is ``'train'``, ``'val'`` or ``'test'``; ``'val'`` is a
    stratified ``val_fraction`` (default 0.1, seed ``val_seed=0``) of the
    train list, which ``split='train', holdout_val=True`` then leaves out
    (see :class:`LongTailMultiLabelDataset`).
    """

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 labels_file: str = 'longtail2012/voc_labels.txt',
                 train_file: str = 'longtail2012/voc_lt_train.txt',
                 test_file: str = 'longtail2012/voc_lt_test.txt',
                 captions_file: str = 'longtail2012/voc_lt_captions.txt',
                 **kwargs):
        super().__init__(
            labels_file=labels_file,
            train_file=train_file,
            test_file=test_file,
            captions_file=captions_file,
            data_root=data_root,
            split=split,
            **kwargs)
