# Copyright (c) lmclip_mm authors.
"""The image cache of a :class:`LongTailMultiLabelDataset`: open (or
create) the store of its list file and fill it for the dataset's images."""
import logging
import os.path as osp
from typing import Optional, Sequence

import numpy as np
from mmengine.logging import print_log

from ..mlt_format import MAX_LISTED_BAD_IMAGES, DatasetFormatError
from ..transforms import LoadResizedImage
from .filling import fill_with_progress
from .store import ENV_DIR, CacheUnavailable, ImageCache


def attach_image_cache(dataset, list_paths: Sequence[str],
                       cache_dir: Optional[str] = None,
                       workers: Optional[int] = None):
    """``(store, slots, report)`` for ``dataset`` (fully initialised), or
    None where its images are decoded on every use.

    ``list_paths`` are the image paths of the whole list file (train, val
    and held-out train share one store); ``slots[i]`` is the slot of the
    dataset's ``i``-th image; ``report`` is what the fill did. Images that
    cannot be decoded raise a :class:`DatasetFormatError` naming the list
    file's lines.
    """
    transforms = dataset.pipeline.transforms
    name = type(dataset).__name__
    if not transforms:
        return None  # nothing is decoded (a dataset built for its metainfo)
    if not isinstance(transforms[0], LoadResizedImage):
        # e.g. a config that replaced the pipeline of a cached base
        print_log(
            f'{name}(cache=True) caches the output of a LoadResizedImage '
            'transform at the start of the pipeline, but this pipeline '
            f'starts with {type(transforms[0]).__name__}: the images are '
            'decoded on every use (start the pipeline with '
            "dict(type='LoadResizedImage', scale=...) to cache them, or set "
            'cache=False to silence this)', logger='current',
            level=logging.WARNING)
        return None
    try:
        store = ImageCache(list_paths, transforms[0], cache_dir,
                           label=osp.splitext(osp.basename(
                               dataset.ann_file))[0])
    except CacheUnavailable as e:
        print_log(f'{e}; the images are decoded on every use (set '
                  f'cache_dir= or ${ENV_DIR} to a writable folder, or '
                  'cache=False)', logger='current', level=logging.WARNING)
        return None
    slot_of = {}
    for slot, path in enumerate(store.paths):
        slot_of.setdefault(path, slot)
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    slots = np.array(
        [slot_of[osp.abspath(info['img_path'])] for info in infos],
        dtype=np.int64)
    if store.created:
        print_log(f'image cache: new store {store.dir} for the '
                  f'{len(store.paths)} images of {dataset.ann_file} at '
                  f'{store.shape[1]}x{store.shape[0]}: '
                  f'{store.nbytes / 2**20:.0f} MiB on disk when filled',
                  logger='current')
    report = fill_with_progress(store, slots, workers)
    if report['failed']:
        line_of = {osp.abspath(info['img_path']): info['line_no']
                   for info in infos}
        listed = '; '.join(
            f'line {line_of.get(store.paths[s])}: {store.paths[s]}: '
            f'{type(e).__name__}: {e}'
            for s, e in report['failed'][:MAX_LISTED_BAD_IMAGES])
        raise DatasetFormatError(
            f'{dataset.ann_file}: cannot load {len(report["failed"])} of '
            f'the {len(dataset)} images of the {dataset.split} split '
            f'({listed})')
    return store, slots, report


def prepare_cached(dataset, idx: int):
    """``dataset.prepare_data(idx)`` with the first transform's output
    from the store (decoded from the file where it changed since)."""
    data_info = dataset.get_data_info(idx)
    loader, *rest = dataset.pipeline.transforms
    hit = dataset.image_cache.get(int(dataset._cache_slots[idx]))
    if hit is None:
        results = loader(data_info)
    else:
        results = loader.fill_results(data_info, *hit)
    for t in rest:
        results = t(results)
        if results is None:
            return None
    return results
