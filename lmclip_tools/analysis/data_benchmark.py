# Copyright (c) lmclip_mm authors.
"""The data part of ``tools/analysis/benchmark.py`` (``--part data``).

On a stand-in COCO-MLT (the real train/test sizes, 1,909 / 5,000 images,
hard links to the two real photos scikit-learn ships, 427x640 JPEGs):

1. **per core** (this process, one torch thread, paths alternating round by
   round on the same images): images/s of the paper's own
   ``COCOMLTDataset.__getitem__`` (damilab/lm-clip,
   ``dataset_loaders/coco_mlt.py``: ``Image.open().convert('RGB')``,
   torchvision ``Resize((224, 224))``, ``RandomHorizontalFlip`` (train),
   ``ToTensor``, ``Normalize``, its label and caption tensors), of this
   project's dataset built from the COCO-MLT config (``dataset[i]``) before
   (mmcv's ``LoadImageFromFile`` + ``Resize``), uncached (the first pass:
   ``LoadResizedImage``) and from the image cache (every later pass), for
   the train and the test split; and the cache fill on one thread;
2. **the paper protocol's data work**: ``--protocol-epochs`` epochs of the
   train sampler's indices (``ClassAwareRepeatSampler``, the same indices
   for both) plus the whole test set each epoch, through DataLoaders with
   ``--data-workers`` workers and a model that costs nothing: the paper's
   loaders (batch 8 for both, workers restarted every epoch, as its
   ``build_loaders``) against this project's loaders as ``tools/train.py``
   builds them from the config (the cache filled from empty first, counted),
   epochs alternating; and the memory of the loader workers' cache pages
   (RSS counts a shared page in every worker, PSS divides it).
"""
import os
import os.path as osp
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch

#: the paper's ImageNet normalisation
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
#: COCO-MLT's layout under data_root (configs/_base_/datasets/coco_mlt.py)
LABELS, TRAIN, TEST = ('longtail2017/coco_labels.txt',
                       'longtail2017/coco_lt_train.txt',
                       'longtail2017/coco_lt_test.txt')


def add_arguments(p):
    g = p.add_argument_group('data part (--part data|all)')
    g.add_argument('--data-train-images', type=int, default=1909,
                   help='train images of the stand-in set (COCO-MLT: 1909)')
    g.add_argument('--data-test-images', type=int, default=5000,
                   help='test images of the stand-in set (COCO-MLT: 5000)')
    g.add_argument('--data-rounds', type=int, default=3,
                   help='alternating rounds of the per-core comparison')
    g.add_argument('--data-round-images', type=int, default=120,
                   help='images per path and round (per core)')
    g.add_argument('--data-workers', type=int, default=4,
                   help='loader workers of the protocol (the paper: 4)')
    g.add_argument('--protocol-epochs', type=int, default=50,
                   help='epochs of the paper protocol (the paper: 50; 0 '
                   'skips it)')


def sklearn_photos():
    import sklearn.datasets
    folder = osp.join(osp.dirname(sklearn.datasets.__file__), 'images')
    return [osp.join(folder, f) for f in ('china.jpg', 'flower.jpg')]


def write_photo_set(root, train_labels, test_labels, classes):
    """COCO-MLT's layout under ``root``; image ``i`` of a split is a hard
    link (else a copy) to one of the two photos."""
    photos = sklearn_photos()
    os.makedirs(osp.join(root, 'longtail2017'), exist_ok=True)
    with open(osp.join(root, LABELS), 'w') as f:
        f.writelines(f'{name} {i}\n' for i, name in enumerate(classes))
    for file, folder, labels in ((TRAIN, 'train2017', train_labels),
                                 (TEST, 'val2017', test_labels)):
        os.makedirs(osp.join(root, folder), exist_ok=True)
        lines = []
        for i, labs in enumerate(labels):
            rel = f'{folder}/{i:012d}.jpg'
            dst = osp.join(root, rel)
            if not osp.exists(dst):
                try:
                    os.link(photos[i % 2], dst)
                except OSError:
                    shutil.copyfile(photos[i % 2], dst)
            lines.append(' '.join([rel] + [str(c) for c in labs]) + '\n')
        with open(osp.join(root, file), 'w') as f:
            f.writelines(lines)


class PaperDataset(torch.utils.data.Dataset):
    """The paper's ``COCOMLTDataset`` as far as ``__getitem__`` goes (its
    ``__init__`` tokenises the captions once; here they are zeros of the
    same shape)."""

    def __init__(self, root, records, classes, train):
        import torchvision.transforms as T
        self.root = root
        self.image_paths = [path for path, _ in records]
        self.labels = [labels for _, labels in records]
        self.classes = [dict(id=i, name=n) for i, n in enumerate(classes)]
        self.labels_one_hot = []
        for labels in self.labels:
            one_hot = np.zeros(len(classes))
            one_hot[list(labels)] = 1
            self.labels_one_hot.append(one_hot)
        self.encoded_captions = torch.zeros(len(records), 77,
                                            dtype=torch.long)
        steps = [T.Resize((224, 224))]
        if train:
            steps.append(T.RandomHorizontalFlip())
        self.transforms = T.Compose(steps + [T.ToTensor(),
                                             T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.image_paths)

    def __getitem__(self, idx):
        from PIL import Image
        item = {}
        image_path = osp.normpath(osp.join(self.root, self.image_paths[idx]))
        image = Image.open(image_path).convert('RGB')
        item['idx'] = idx
        item['image'] = self.transforms(image)
        item['label_one_hot'] = torch.tensor(
            self.labels_one_hot[idx]).float()
        item['caption'] = self.encoded_captions[idx]
        for category_id in self.labels[idx]:
            index = next((i for i, d in enumerate(self.classes)
                          if d['id'] == category_id), None)
            item['label_one_hot'][index] = 1
        return item


def read_records(root, file):
    from lmclip_mm.datasets.mlt_format import parse_split_file
    with open(osp.join(root, LABELS)) as f:
        num_classes = sum(1 for line in f if line.strip())
    return [(r.path, list(r.labels)) for r in parse_split_file(
        osp.join(root, file), num_classes, allow_unlabeled=True)]


def our_loader_cfg(cfg, key, root, cache, cache_dir, workers=None):
    loader = cfg[key].copy()
    loader.dataset = loader.dataset.copy()
    loader.dataset.update(data_root=root, cache=cache, cache_dir=cache_dir)
    if workers is not None:
        loader.num_workers = workers
        loader.persistent_workers = workers > 0 and loader.get(
            'persistent_workers', False)
    return loader


def build_dataset(loader_cfg, pipeline=None):
    from mmpretrain.registry import DATASETS
    dataset = loader_cfg.dataset.copy()
    if pipeline is not None:
        dataset.pipeline = pipeline
    return DATASETS.build(dataset)


def before_pipeline(pipeline_cfg):
    """The pipeline with mmcv's former two loading steps in place of
    LoadResizedImage."""
    first, *rest = [dict(t) for t in pipeline_cfg]
    return [dict(type='LoadImageFromFile', imdecode_backend='pillow',
                 color_type='color_ignore_orientation'),
            dict(type='Resize', scale=first['scale'], backend='pillow',
                 interpolation=first.get('interpolation', 'bilinear'))
            ] + rest


def per_core(paths, indices, rounds):
    """Median images/s of each ``name -> getitem`` over alternating rounds."""
    rates = {name: [] for name in paths}
    names = list(paths)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn = paths[name]
            start = time.perf_counter()
            for i in indices:
                fn(i)
            rates[name].append(len(indices) / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in rates.items()}


def mapping_memory(pids, path):
    """``(rss, pss)`` in KiB of the mappings of ``path`` in ``pids``."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f'/proc/{pid}/smaps') as f:
                inside = False
                for line in f:
                    head = line.split()
                    if '-' in head[0] and len(head) >= 5:  # a mapping
                        inside = line.rstrip().endswith(path)
                    elif inside and head[0] == 'Rss:':
                        rss += int(head[1])
                    elif inside and head[0] == 'Pss:':
                        pss += int(head[1])
        except OSError:
            pass
    return rss, pss


def drain(loader):
    n = 0
    for batch in loader:
        n += len(batch['inputs'] if 'inputs' in batch else batch['image'])
    return n


def main(args, cfg, log=print):
    from mmengine.runner import Runner

    from lmclip_tools.analysis import paper_reference as B

    tmp = None
    if args.work_dir:
        root = osp.join(args.work_dir, 'data_part')
    else:
        tmp = tempfile.TemporaryDirectory(prefix='lmclip_data_bench_')
        root = tmp.name
    data_root = osp.join(root, 'coco_mlt_standin')
    classes = B.class_names(80, args.data_dir)
    rng = np.random.default_rng(args.seed)
    train_labels = B.read_split_labels(80, args.data_dir)
    if train_labels is None or len(train_labels) != args.data_train_images:
        train_labels = B._synthetic_labels(args.data_train_images, 80, rng)
        for c in range(80):  # every class in the train list
            labels = train_labels[c % len(train_labels)]
            train_labels[c % len(train_labels)] = sorted(set(labels) | {c})
    test_labels = B._synthetic_labels(args.data_test_images, 80, rng)
    write_photo_set(data_root, train_labels, test_labels, classes)
    log(f'data: stand-in COCO-MLT, {len(train_labels)} train / '
        f'{len(test_labels)} test images linked to scikit-learn\'s two '
        '427x640 JPEG photos (china.jpg, flower.jpg)')

    # ---- 1. per core
    torch.set_num_threads(1)
    results = {}
    for split, key, file in (('train', 'train_dataloader', TRAIN),
                             ('test', 'test_dataloader', TEST)):
        cache_dir = osp.join(root, f'cache_per_core_{split}')
        loader_cfg = our_loader_cfg(cfg, key, data_root, True, cache_dir)
        uncached_cfg = our_loader_cfg(cfg, key, data_root, False, None)
        uncached = build_dataset(uncached_cfg)
        before = build_dataset(uncached_cfg, before_pipeline(
            uncached_cfg.dataset.pipeline))
        # the cache filled on one thread, from empty: the first pass
        fill_cfg = loader_cfg.copy()
        fill_cfg.dataset = dict(loader_cfg.dataset, cache_workers=1)
        cached = build_dataset(fill_cfg)
        report = cached.cache_report
        assert report['computed'] == len(cached), report
        paper = PaperDataset(data_root, read_records(data_root, file),
                             classes, train=split == 'train')
        n = min(args.data_round_images, len(paper))
        indices = list(range(n))
        paths = {
            'paper __getitem__': paper.__getitem__,
            'mmcv LoadImageFromFile + Resize (before)': before.__getitem__,
            'ours, first pass (LoadResizedImage)': uncached.__getitem__,
            'ours, repeated pass (image cache)': cached.__getitem__,
        }
        rates = per_core(paths, indices, args.data_rounds)
        rates['ours, cache fill in 1 process (first pass, cached)'] = \
            report['computed'] / report['seconds']
        results[split] = rates
        base = rates['paper __getitem__']
        log(f'per core, {split} split ({n} images x {args.data_rounds} '
            'alternating rounds, median; 1 torch thread):')
        for name, rate in rates.items():
            log(f'  {name:<52} {rate:8.1f} images/s  {rate / base:6.2f}x')
    first = min(results[s]['ours, first pass (LoadResizedImage)'] /
                results[s]['paper __getitem__'] for s in results)
    repeated = min(results[s]['ours, repeated pass (image cache)'] /
                   results[s]['paper __getitem__'] for s in results)
    log(f'goals per core: first pass >= 1.0x: '
        f'{"met" if first >= 1.0 else "NOT met"} ({first:.2f}x); repeated '
        f'pass >= 20x: {"met" if repeated >= 20 else "NOT met"} '
        f'({repeated:.1f}x)')
    torch.set_num_threads(args.threads or torch.get_num_threads())

    if args.protocol_epochs <= 0:
        if tmp is not None:
            tmp.cleanup()
        return results, None

    # ---- 2. the paper protocol's data work
    workers, epochs = args.data_workers, args.protocol_epochs
    log(f'paper protocol: {epochs} epochs x ({len(train_labels)} train '
        f'indices of the sampler + {len(test_labels)} test images), '
        f'{workers} loader workers, no model; paper and ours alternate '
        'epoch by epoch')
    cache_dir = osp.join(root, 'cache_protocol')
    t0 = time.perf_counter()
    ours_train = Runner.build_dataloader(our_loader_cfg(
        cfg, 'train_dataloader', data_root, True, cache_dir, workers),
        seed=args.seed)
    ours_test = Runner.build_dataloader(our_loader_cfg(
        cfg, 'test_dataloader', data_root, True, cache_dir, workers),
        seed=args.seed)
    build_s = time.perf_counter() - t0
    store = ours_train.dataset.image_cache
    log(f'ours: datasets built and image cache filled from empty in '
        f'{build_s:.1f} s ({store.disk_usage() / 2**20:.0f} MiB for the '
        'train list, counted in ours\' time)')
    paper_train = PaperDataset(data_root, read_records(data_root, TRAIN),
                               classes, train=True)
    paper_test_loader = torch.utils.data.DataLoader(
        PaperDataset(data_root, read_records(data_root, TEST), classes,
                     train=False),
        batch_size=8, num_workers=workers, shuffle=False)
    totals = dict(paper=0.0, ours=build_s)
    memory = None
    sampler = ours_train.sampler
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        indices = list(iter(sampler))
        t = time.perf_counter()
        drain(torch.utils.data.DataLoader(
            paper_train, batch_size=8, num_workers=workers,
            sampler=indices))
        drain(paper_test_loader)
        paper_s = time.perf_counter() - t
        t = time.perf_counter()
        seen = drain(ours_train)
        drain(ours_test)
        ours_s = time.perf_counter() - t
        assert seen == len(indices)
        totals['paper'] += paper_s
        totals['ours'] += ours_s
        if memory is None and getattr(ours_train, '_iterator', None):
            pids = [w.pid for w in ours_train._iterator._workers]
            rss, pss = mapping_memory(
                pids, osp.join(store.dir, 'pixels.u8'))
            memory = dict(workers=len(pids), rss_mib=rss / 1024,
                          pss_mib=pss / 1024,
                          store_mib=store.disk_usage() / 2**20)
        log(f'  epoch {epoch + 1}/{epochs}: paper {paper_s:.1f} s, ours '
            f'{ours_s:.1f} s (totals {totals["paper"]:.0f} / '
            f'{totals["ours"]:.0f} s)')
    ratio = totals['ours'] / totals['paper']
    log(f'paper protocol data work: paper {totals["paper"]:.1f} s, ours '
        f'{totals["ours"]:.1f} s (the cache fill included) = '
        f'{ratio:.3f} of the paper\'s (goal <= 0.1: '
        f'{"met" if ratio <= 0.1 else "NOT met"})')
    if memory is not None:
        log(f'cache pages in the {memory["workers"]} persistent train '
            f'loader workers: RSS summed {memory["rss_mib"]:.0f} MiB, PSS '
            f'summed {memory["pss_mib"]:.0f} MiB (the train store '
            f'{memory["store_mib"]:.0f} MiB): shared pages are counted '
            'once (PSS), not once per worker')
    if tmp is not None:
        tmp.cleanup()
    return results, dict(totals, ratio=ratio, memory=memory)
