"""Generic long-tailed multi-label dataset read from LMPT / LM-CLIP list files.

See :mod:`lmclip_mm.datasets.mlt_format` for the file format.
"""
import os.path as osp
import warnings
from typing import List, Optional, Sequence, Union

from mmengine.fileio import join_path
from mmengine.utils import is_abs
from mmpretrain.datasets import MultiLabelDataset
from mmpretrain.registry import DATASETS

from .class_stats import long_tail_stats
from .image_cache.dataset import attach_image_cache, prepare_cached
from .mlt_format import (MAX_LISTED_BAD_IMAGES, DatasetFormatError,
                         bad_images_error, find_bad_images,
                         parse_captions_file, parse_labels_file,
                         parse_split_file)
from .val_split import check_val_args, stratified_val_indices

#: metainfo keys computed from the list files (the contract with the model,
#: the sampler and the metrics).
COMPUTED_METAINFO_KEYS = ('classes', 'class_counts', 'num_train_images',
                          'head_classes', 'middle_classes', 'tail_classes')


@DATASETS.register_module()
class LongTailMultiLabelDataset(MultiLabelDataset):
    """A long-tailed multi-label dataset given as LMPT / LM-CLIP list files.

    Point it at any files of the same format::

        dict(type='LongTailMultiLabelDataset',
             data_root='data/my_set',
             labels_file='my_labels.txt',
             train_file='my_lt_train.txt',
             test_file='my_lt_test.txt',
             captions_file='my_lt_captions.txt',   # optional
             split='train',
             pipeline=[...])

    File paths are relative to ``data_root`` unless absolute; the image paths
    in the split files are relative to ``data_root/data_prefix``.

    Splits: ``'train'`` (the train list), ``'test'`` (the test list) and
    ``'val'``, a validation split held out of the train list for an honest
    model selection (the test list is then used once, at the end):

    * ``split='val'``: about ``val_fraction`` of the train list's images,
      drawn by multi-label iterative stratification
      (:func:`lmclip_mm.datasets.val_split.stratified_val_indices`, the
      ``iterative-stratification`` package) with seed ``val_seed``, so that
      every class keeps about ``val_fraction`` of its images in val where
      its count allows;
    * ``split='train', holdout_val=True``: the train list WITHOUT those val
      images (same ``val_fraction`` / ``val_seed``), i.e. the training set
      of the honest protocol. ``holdout_val=False`` (the default, the
      paper's protocol) gives the full train list;
    * ``split='test'``: the test list (``val_*`` / ``holdout_val`` unused).

    Val and held-out train are disjoint and together give the train list;
    images keep their line order and ``line_no``. The draw depends only on
    the train list (its lines' labels, in their order), ``val_fraction`` and
    ``val_seed``: every process and every run draws the same split.

    The statistics follow the protocol (:mod:`lmclip_mm.datasets.class_stats`
    says which images each one counts, and why): ``class_counts`` /
    ``num_train_images`` count the images trained on (the train list
    without the val images for ``split='val'`` and ``holdout_val=True``),
    which the loss (through :class:`~lmclip_mm.engine.hooks.DatasetMetaHook`)
    and :class:`~lmclip_mm.datasets.ClassAwareRepeatSampler` both use;
    ``split='test'`` gives the full train list's; the head/middle/tail
    groups always come from the full train list.

    ``metainfo`` holds:

    * ``classes``: tuple of class names ordered by id;
    * ``class_counts``: list of ``n_c``, the number of images trained on
      with class ``c``;
    * ``num_train_images``: ``N``, the number of images trained on;
    * ``head_classes`` / ``middle_classes`` / ``tail_classes``: sorted class
      indices with ``n_c >= head_threshold`` /
      ``tail_threshold <= n_c < head_threshold`` / ``n_c < tail_threshold``,
      ``n_c`` counted over the full train list.

    The full train list's counts are also the attributes
    ``train_list_counts`` and ``num_train_list_images``.

    Each data info holds ``img_path`` (joined path), ``gt_label`` (list of
    int, in the order of the line; empty for an unlabeled test line) and
    ``caption`` (str). Pass the caption to the model with
    ``dict(type='PackInputs', algorithm_keys=['caption'])``.

    Args:
        labels_file (str): ``name id`` per line.
        train_file (str): train split, ``path id id ...`` per line. Every
            line needs at least one id.
        test_file (str): test split, same format; lines without id are kept
            with an empty ``gt_label``.
        data_root (str): root of the list files and the images.
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        val_fraction (float): share of the train list held out as the val
            split, in (0, 1); reached approximately (stratification).
            Defaults to 0.1.
        val_seed (int): seed of the val draw. Defaults to 0.
        holdout_val (bool): with ``split='train'``, leave the val images
            out. Defaults to False (the full train list, as the paper).
        captions_file (str, optional): ``path caption`` per line.
        caption_source (str): ``'template'`` (default) gives each image the
            caption ``caption_prefix + ', '.join(its class names)``;
            ``'file'`` reads it from ``captions_file`` (every image of the
            split must have one).
        caption_prefix (str): prefix of the template caption. Defaults to
            ``'a photo of a '``.
        head_threshold (int): ``n_c`` from which a class is head. Default 100.
        tail_threshold (int): ``n_c`` below which a class is tail. Default 20.
        check_images (bool): check when the dataset is built that every image
            of the split exists and is a readable non-empty file; all bad
            ones are reported in one error. Defaults to True.
        data_prefix (str): folder of the image paths, relative to
            ``data_root`` unless absolute. Defaults to ``''``.
        cache (bool): serve the output of the pipeline's first transform,
            a :class:`~lmclip_mm.datasets.transforms.LoadResizedImage`, from
            an exact on-disk image cache
            (:mod:`lmclip_mm.datasets.image_cache`) filled when the
            dataset is built; the transforms after it run
            on every access as usual. Defaults to False (decode every
            time); the paper, honest and toy configs set True.
        cache_dir (str, optional): the cache root. Defaults to
            ``$LMCLIP_CACHE_DIR``, else ``~/.cache/lmclip_mm/images``.
        cache_workers (int, optional): processes (threads off Linux) that
            fill the cache. Defaults to the CPUs of this process over the
            local ranks.
        test_mode (bool, optional): defaults to ``split != 'train'``.
        metainfo (dict, optional): extra meta information. It may not
            contradict the computed keys (``classes``, ``class_counts``, ...).
        pipeline, indices, serialize_data, lazy_init, max_refetch: as in
            :class:`mmpretrain.datasets.BaseDataset`.

    Raises:
        DatasetFormatError: malformed or inconsistent files; the message
            names the file, the line and the problem.
        DatasetFileNotFoundError: a missing list file or missing images.
    """

    SPLITS = ('train', 'val', 'test')
    CAPTION_SOURCES = ('template', 'file')

    def __init__(self,
                 labels_file: str,
                 train_file: str,
                 test_file: str,
                 data_root: str = '',
                 split: str = 'train',
                 val_fraction: float = 0.1,
                 val_seed: int = 0,
                 holdout_val: bool = False,
                 captions_file: Optional[str] = None,
                 caption_source: str = 'template',
                 caption_prefix: str = 'a photo of a ',
                 head_threshold: int = 100,
                 tail_threshold: int = 20,
                 check_images: bool = True,
                 data_prefix: str = '',
                 cache: bool = False,
                 cache_dir: Optional[str] = None,
                 cache_workers: Optional[int] = None,
                 pipeline: Sequence = (),
                 test_mode: Optional[bool] = None,
                 metainfo: Optional[dict] = None,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 serialize_data: bool = True,
                 lazy_init: bool = False,
                 max_refetch: int = 1000):
        if split not in self.SPLITS:
            raise ValueError(f'split must be one of {self.SPLITS}, got '
                             f'{split!r}')
        check_val_args(val_fraction, val_seed)
        if not isinstance(holdout_val, bool):
            raise ValueError(
                f'holdout_val must be True or False, got {holdout_val!r}')
        if caption_source not in self.CAPTION_SOURCES:
            raise ValueError('caption_source must be one of '
                             f'{self.CAPTION_SOURCES}, got {caption_source!r}')
        if caption_source == 'file' and not captions_file:
            raise ValueError("caption_source='file' needs a captions_file")
        if not isinstance(cache, bool):
            raise ValueError(f'cache must be True or False, got {cache!r}')
        data_root = osp.expanduser(data_root) if data_root else data_root
        self.cache = cache
        self.cache_dir = cache_dir
        self.cache_workers = cache_workers
        self.image_cache = None
        self.split = split
        self.val_fraction = val_fraction
        self.val_seed = val_seed
        self.holdout_val = holdout_val
        self.caption_source = caption_source
        self.caption_prefix = caption_prefix
        self.check_images = check_images
        self.head_threshold = head_threshold
        self.tail_threshold = tail_threshold
        self.labels_file = self._resolve(data_root, labels_file)
        self.train_file = self._resolve(data_root, train_file)
        self.test_file = self._resolve(data_root, test_file)
        self.captions_file = (
            self._resolve(data_root, captions_file) if captions_file else None)

        computed = self._compute_metainfo()
        metainfo = dict(metainfo or {})
        for key, value in computed.items():
            if key in metainfo and _normalise(metainfo[key]) != _normalise(
                    value):
                raise ValueError(
                    f'metainfo[{key!r}]={metainfo[key]!r} contradicts the '
                    f'value computed from the list files ({value!r}); leave '
                    'it out of metainfo')
            metainfo[key] = value

        if test_mode is None:
            test_mode = split != 'train'
        ann_file = test_file if split == 'test' else train_file
        super().__init__(
            ann_file=osp.expanduser(ann_file),
            metainfo=metainfo,
            data_root=data_root,
            data_prefix=osp.expanduser(data_prefix),
            indices=indices,
            serialize_data=serialize_data,
            pipeline=pipeline,
            test_mode=test_mode,
            lazy_init=lazy_init,
            max_refetch=max_refetch)

    @staticmethod
    def _resolve(data_root: str, path: str) -> str:
        """The same join as mmengine's ``BaseDataset._join_prefix``."""
        path = osp.expanduser(path)
        if data_root and not is_abs(path):
            return join_path(data_root, path)
        return path

    def _compute_metainfo(self) -> dict:
        classes = parse_labels_file(self.labels_file)
        train = parse_split_file(
            self.train_file, len(classes), allow_unlabeled=False)
        if not train:
            raise DatasetFormatError(
                f'{self.train_file}: the train split lists no image')
        labels = [r.labels for r in train]
        stats = long_tail_stats(labels, len(classes), None,
                                self.head_threshold, self.tail_threshold)
        empty = _empty_classes(classes, stats.train_list_counts)
        if empty:
            raise DatasetFormatError(
                f'{self.train_file}: no train image has class {empty} '
                f'(defined in {self.labels_file}); the class rarity N / n_c '
                'is undefined for such a class')
        # Keep the parsed train split for load_data_list.
        self._train_records = train
        self.val_indices = None
        if self.split == 'val' or (self.split == 'train'
                                   and self.holdout_val):
            # positions in the train list of the val images
            self.val_indices = stratified_val_indices(
                labels, len(classes), self.val_fraction,
                self.val_seed).tolist()
            # the images trained on: the train list without the val images
            stats = long_tail_stats(labels, len(classes), self.val_indices,
                                    self.head_threshold, self.tail_threshold)
            empty = _empty_classes(classes, stats.class_counts)
            if empty:
                warnings.warn(
                    f'{self.train_file}: the val split (val_fraction='
                    f'{self.val_fraction}, val_seed={self.val_seed}) holds '
                    f'every train image of class {empty}: no image trained '
                    'on has it (class_counts 0), so its loss class weight '
                    '(rarity N / n_c) is undefined; use a smaller '
                    'val_fraction')
        self.train_list_counts = stats.train_list_counts
        self.num_train_list_images = stats.num_train_list_images
        return dict(classes=classes, **stats.metainfo())

    def load_data_list(self) -> List[dict]:
        classes = self._metainfo['classes']
        if self.split in ('train', 'val'):
            records = getattr(self, '_train_records', None) or \
                parse_split_file(
                    self.ann_file, len(classes), allow_unlabeled=False)
        else:
            records = parse_split_file(
                self.ann_file, len(classes), allow_unlabeled=True)
        self._train_records = None
        # the image cache holds the whole list file (train, val and held-out
        # train share one store)
        self._list_paths = [join_path(self.img_prefix, r.path)
                            for r in records]
        if self.val_indices is not None:
            val = set(self.val_indices)
            keep = 'val' == self.split
            records = [r for i, r in enumerate(records)
                       if (i in val) == keep]
        if not records:
            raise DatasetFormatError(
                f'{self.ann_file}: the {self.split} split lists no image')

        img_paths = [join_path(self.img_prefix, r.path) for r in records]
        if self.check_images:
            self._check_images(records, img_paths)

        if self.caption_source == 'file':
            captions = parse_captions_file(self.captions_file)
            missing = [r for r in records
                       if osp.normpath(r.path) not in captions]
            if missing:
                listed = '; '.join(f'line {r.line_no}: {r.path}'
                                   for r in missing[:MAX_LISTED_BAD_IMAGES])
                raise DatasetFormatError(
                    f'{self.captions_file}: no caption for {len(missing)} of '
                    f'the {len(records)} images of {self.ann_file} '
                    f'(first ones, with their line in {self.ann_file}: '
                    f'{listed})')
            texts = [captions[osp.normpath(r.path)][1] for r in records]
        else:
            texts = [
                self.caption_prefix + ', '.join(classes[c] for c in r.labels)
                for r in records
            ]

        return [
            dict(img_path=img_path, gt_label=list(r.labels), caption=text,
                 line_no=r.line_no)
            for r, img_path, text in zip(records, img_paths, texts)
        ]

    def full_init(self):
        if self._fully_initialized:
            return
        super().full_init()
        if self.cache:
            self._init_cache()

    def _init_cache(self) -> None:
        """Open (or create) the image cache and fill it for this split."""
        attached = attach_image_cache(self, self._list_paths, self.cache_dir,
                                      self.cache_workers)
        if attached is not None:
            self.image_cache, self._cache_slots, self.cache_report = attached

    def prepare_data(self, idx):
        """Run the pipeline; a failure names the list file, line and image.

        E.g. an image that passed the build-time checks but cannot be
        decoded fails here, at its first touch, as a
        :class:`DatasetFormatError` instead of a bare error of the pipeline.
        With the image cache, the first transform's output comes from the
        cache (or, for an image changed since, from its file).
        """
        try:
            if self.image_cache is not None:
                return prepare_cached(self, idx)
            return super().prepare_data(idx)
        except DatasetFormatError:
            raise
        except Exception as e:
            info = self.get_data_info(idx)
            raise DatasetFormatError(
                f'{self.ann_file}, line {info.get("line_no")}: cannot load '
                f'{info.get("img_path")}: {type(e).__name__}: {e}') from e

    def _check_images(self, records, img_paths) -> None:
        bad = find_bad_images([(r.line_no, p)
                               for r, p in zip(records, img_paths)])
        if not bad:
            return
        raise bad_images_error(self.ann_file, bad, len(records),
                               self.img_prefix, MAX_LISTED_BAD_IMAGES)

    def extra_repr(self) -> List[str]:
        body = super().extra_repr()
        meta = self._metainfo
        body.append(f'Split: \t{self.split}')
        if self.val_indices is not None:
            body.append(f'Val split: \tval_fraction={self.val_fraction}, '
                        f'val_seed={self.val_seed}, '
                        f'{len(self.val_indices)} val images held out of the '
                        f'{self.num_train_list_images} train images')
        body.append('Head/middle/tail classes: \t'
                    f'{len(meta["head_classes"])}/'
                    f'{len(meta["middle_classes"])}/'
                    f'{len(meta["tail_classes"])}')
        return body


def _normalise(value):
    """Compare metainfo values regardless of list/tuple."""
    if isinstance(value, (list, tuple)):
        return tuple(_normalise(v) for v in value)
    return value


def _empty_classes(classes, counts) -> str:
    """``"i ('name'), ..."`` of the classes whose count is 0 ('' if none)."""
    return ', '.join(f'{i} ({classes[i]!r})' for i, n in enumerate(counts)
                     if n == 0)
