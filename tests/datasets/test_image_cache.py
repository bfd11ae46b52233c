"""The exact image cache (``LongTailMultiLabelDataset(cache=True)``):
bit-identical to the uncached pipeline on real photos, never stale, safe
against SIGKILL during a fill, shared by concurrent processes and threads
without doing any image twice, relocatable, and loud where it cannot work."""
import os
import shutil
import signal
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from forked import ForkedPython, group_alive
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS

import lmclip_mm  # noqa: F401  registers the components
from lmclip_mm.datasets import DatasetFormatError
from lmclip_mm.datasets.image_cache import (CHUNK, RECORD_SIZE, ImageCache,
                                            default_cache_root, pack_record,
                                            unpack_record)
from lmclip_mm.datasets.transforms import LoadResizedImage

pytestmark = pytest.mark.heavy(20)  # seconds on one CI core
PHOTOS = ('china', 'flower', 'exif6', 'gray', 'cmyk', 'la', 'palette',
          'small', 'rgba')
SCALE = (224, 224)


def train_pipeline(scale=SCALE):
    return [dict(type='LoadResizedImage', scale=scale),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='PackInputs', algorithm_keys=['caption'])]


#: the paper configs' former pipeline (mmcv's pillow load, then resize)
OLD_TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow',
         color_type='color_ignore_orientation'),
    dict(type='Resize', scale=SCALE, backend='pillow',
         interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs', algorithm_keys=['caption'])
]


def write_set(root, photos, names, copies=1):
    """List files over ``copies`` copies of each photo in ``names``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / 'img').mkdir(exist_ok=True)
    (root / 'labels.txt').write_text('a 0\nb 1\n')
    lines = []
    for k in range(copies):
        for i, name in enumerate(names):
            suffix = Path(photos[name]).suffix
            rel = f'img/{name}_{k}{suffix}'
            shutil.copyfile(photos[name], root / rel)
            lines.append(f'{rel} {i % 2}')
    (root / 'train.txt').write_text('\n'.join(lines) + '\n')
    return root


def build(root, cache=True, pipeline=None, split='train', **kwargs):
    init_default_scope('mmpretrain')
    return DATASETS.build(dict(
        type='LongTailMultiLabelDataset', data_root=str(root),
        labels_file='labels.txt', train_file='train.txt',
        test_file='train.txt', split=split, cache=cache,
        pipeline=pipeline or train_pipeline(), **kwargs))


def sample(dataset, idx, seed):
    np.random.seed(seed)  # RandomFlip draws from numpy's global stream
    return dataset[idx]


def assert_same(a, b, what):
    assert torch.equal(a['inputs'], b['inputs']), what
    assert a['data_samples'].metainfo == b['data_samples'].metainfo, what
    assert torch.equal(a['data_samples'].gt_label,
                       b['data_samples'].gt_label), what


@pytest.fixture
def log_text():
    """``log_text()``: what mmengine's current logger logged so far."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    yield lambda: '\n'.join(records)
    logger.removeHandler(handler)


@pytest.fixture
def photo_set(real_photos, tmp_path):
    return write_set(tmp_path / 'set', real_photos, PHOTOS)


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / 'cache')


def test_bit_identical_to_the_uncached_and_the_former_pipeline(
        photo_set, cache_dir):
    cached = build(photo_set, cache_dir=cache_dir)
    assert cached.image_cache is not None
    again = build(photo_set, cache_dir=cache_dir)  # served from the store
    uncached = build(photo_set, cache=False)
    former = build(photo_set, cache=False, pipeline=OLD_TRAIN_PIPELINE)
    assert uncached.image_cache is None
    for idx, name in enumerate(PHOTOS):
        slot = int(cached._cache_slots[idx])
        assert cached.image_cache.valid(slot), name
        hit = cached.image_cache.get(slot)
        assert hit is not None
        ref = LoadResizedImage(SCALE)(dict(img_path=cached.image_cache.paths[
            slot]))
        assert np.array_equal(hit[0], ref['img']), name
        assert hit[1] == ref['ori_shape'], name
        for seed in (0, 1, 2, 3):  # flipped and not
            ours = sample(cached, idx, seed)
            assert_same(ours, sample(again, idx, seed), (name, seed))
            assert_same(ours, sample(uncached, idx, seed), (name, seed))
            assert_same(ours, sample(former, idx, seed), (name, seed))


def test_test_pipeline_and_loader_workers(photo_set, cache_dir):
    """Without flip, through a DataLoader with 2 workers: same batches."""
    from mmengine.dataset import default_collate
    test_pipeline = [dict(type='LoadResizedImage', scale=(96, 64)),
                     dict(type='PackInputs')]
    batches = []
    for cache in (True, False):
        ds = build(photo_set, cache=cache, pipeline=test_pipeline,
                   cache_dir=cache_dir)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=4, num_workers=2, collate_fn=default_collate)
        batches.append([b['inputs'] for b in loader])
    assert len(batches[0]) == 3
    for a, b in zip(*batches):
        assert len(a) == len(b) and all(torch.equal(x, y)
                                        for x, y in zip(a, b))
        assert a[0].shape == (3, 64, 96)


def test_a_changed_image_is_never_served_stale(photo_set, cache_dir,
                                               real_photos):
    cached = build(photo_set, cache_dir=cache_dir)
    target = photo_set / 'img' / 'china_0.jpg'
    idx = PHOTOS.index('china')
    before = sample(cached, idx, 0)['inputs']

    # 1. other content (other size): served from the file at once
    shutil.copyfile(real_photos['flower'], target)
    fresh = build(photo_set, cache=False)
    after = sample(cached, idx, 0)
    assert not torch.equal(after['inputs'], before)
    assert_same(after, sample(fresh, idx, 0), 'changed file')
    # and the next build decodes exactly that image again
    report = {}
    rebuilt = build(photo_set, cache_dir=cache_dir)
    slot = int(rebuilt._cache_slots[idx])
    assert rebuilt.image_cache.valid(slot)
    report = rebuilt.image_cache.fill()
    assert report['computed'] == 0 and report['missing'] == 0
    assert_same(sample(rebuilt, idx, 0), sample(fresh, idx, 0), 'rebuilt')

    # 2. replaced by a file of the same size and modification time (e.g.
    # rsync -t writes a new file and renames it): the inode differs
    st = os.stat(target)
    data = bytearray(target.read_bytes())
    data[-200] ^= 0x55  # inside the entropy-coded data
    tmp = target.with_suffix('.tmp')
    tmp.write_bytes(bytes(data))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, target)
    assert os.stat(target).st_size == st.st_size
    assert os.stat(target).st_mtime_ns == st.st_mtime_ns
    assert not rebuilt.image_cache.valid(slot)
    fresh = build(photo_set, cache=False)
    assert_same(sample(rebuilt, idx, 0), sample(fresh, idx, 0),
                'same size and mtime')

    # 3. only the modification time changed: decoded again, same pixels
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not rebuilt.image_cache.valid(slot)


def test_added_removed_images_and_other_parameters_use_another_store(
        photo_set, cache_dir, real_photos):
    first = build(photo_set, cache_dir=cache_dir)
    lines = (photo_set / 'train.txt').read_text().splitlines()
    # an image removed from the list
    (photo_set / 'train.txt').write_text('\n'.join(lines[1:]) + '\n')
    removed = build(photo_set, cache_dir=cache_dir)
    # an image added
    shutil.copyfile(real_photos['china'], photo_set / 'img' / 'extra.jpg')
    (photo_set / 'train.txt').write_text(
        '\n'.join(lines + ['img/extra.jpg 1']) + '\n')
    added = build(photo_set, cache_dir=cache_dir)
    other_size = build(photo_set, cache_dir=cache_dir,
                       pipeline=train_pipeline((64, 64)))
    dirs = {d.image_cache.dir for d in (first, removed, added, other_size)}
    assert len(dirs) == 4
    uncached = build(photo_set, cache=False)
    for idx in range(len(added)):
        assert_same(sample(added, idx, idx), sample(uncached, idx, idx),
                    idx)
    assert sample(other_size, 0, 0)['inputs'].shape == (3, 64, 64)


def test_train_val_and_holdout_share_one_store(real_photos, tmp_path,
                                               cache_dir):
    root = write_set(tmp_path / 'set', real_photos, PHOTOS, copies=3)
    (root / 'train.txt').write_text(''.join(
        f'{line.split()[0]} 0 1\n'
        for line in (root / 'train.txt').read_text().splitlines()))
    val = build(root, split='val', val_fraction=0.3, cache_dir=cache_dir)
    train = build(root, holdout_val=True, val_fraction=0.3,
                  cache_dir=cache_dir)
    assert val.image_cache.dir == train.image_cache.dir
    assert len(val) + len(train) == 27
    # the val build filled the val slots only; the train build the rest
    assert val.image_cache.count_valid() == 27


def run_fill_script(root, cache_dir, delay, workers=1, extra=''):
    """A process (a fork of this one: :class:`forked.ForkedPython`) that
    builds the cached dataset of ``root`` with a decoder slowed down by
    ``delay`` seconds per image."""
    head = textwrap.dedent(f'''
        import json, sys, time
        import lmclip_mm
        from lmclip_mm.datasets.transforms import LoadResizedImage
        decode = LoadResizedImage.decode_chw
        def slow(self, data):
            time.sleep({delay})
            return decode(self, data)
        LoadResizedImage.decode_chw = slow
    ''')
    tail = textwrap.dedent(f'''
        from mmengine.registry import init_default_scope
        from mmpretrain.registry import DATASETS
        init_default_scope('mmpretrain')
        ds = DATASETS.build(dict(
            type='LongTailMultiLabelDataset', data_root={str(root)!r},
            labels_file='labels.txt', train_file='train.txt',
            test_file='train.txt', cache=True, cache_dir={cache_dir!r},
            cache_workers={workers},
            pipeline=[dict(type='LoadResizedImage', scale=(224, 224))]))
        print('REPORT', json.dumps(dict(computed=ds.cache_report['computed'],
                                        reused=ds.cache_report['reused'])))
    ''')
    code = head + textwrap.dedent(extra) + tail
    return ForkedPython(code)


def store_of(root, cache_dir, scale=SCALE):
    ds = build(root, cache=False, pipeline=train_pipeline(scale))
    return ImageCache(ds._list_paths, LoadResizedImage(scale), cache_dir,
                      label='train')


def test_sigkill_during_a_fill_leaves_nothing_wrong(real_photos, tmp_path,
                                                    cache_dir):
    """Kill fills at several moments after they started decoding (with one
    worker, and with two fill processes, which die with their parent);
    whatever a later run serves is exact.

    The decoder is slowed down so that each kill lands in the middle of
    the fill; the exact moments between the writes are
    test_killed_at_each_write_step_nothing_wrong_is_served's.
    """
    root = write_set(tmp_path / 'set', real_photos, PHOTOS,
                     copies=(CHUNK * 2) // len(PHOTOS) + 1)
    n = len((root / 'train.txt').read_text().splitlines())
    expected = {}
    interrupted = 0  # kills that left the store partly filled
    for kill_after, workers in ((0.3, 1), (2.0, 1), (1.0, 2)):
        proc = run_fill_script(root, cache_dir, delay=0.03, workers=workers)
        lines = []
        reader = threading.Thread(
            target=lambda: lines.extend(iter(proc.stdout.readline, '')))
        reader.start()
        deadline = time.time() + 120
        while time.time() < deadline and not any(
                'image cache: decoding' in x for x in lines):
            assert proc.poll() is None, ''.join(lines)[-3000:]
            time.sleep(0.02)
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        assert proc.returncode == -signal.SIGKILL, ''.join(lines)[-3000:]
        # the fill processes died with their parent (its process group)
        deadline = time.time() + 10
        while group_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not group_alive(proc.pid)
        store = store_of(root, cache_dir)
        pixels = np.frombuffer(store._maps()[0], np.uint8)
        written = int(np.count_nonzero(pixels.reshape(n, -1).any(1)))
        valid = store.count_valid()
        assert valid <= written
        interrupted += 0 < valid < n
        for slot in range(n):
            hit = store.get(slot)
            if hit is None:
                continue
            if slot not in expected:
                expected[slot] = LoadResizedImage(SCALE)(
                    dict(img_path=store.paths[slot]))
            assert np.array_equal(hit[0], expected[slot]['img']), slot
            assert hit[1] == expected[slot]['ori_shape']
    # the kills landed in the middle of fills
    assert interrupted >= 2
    # a later run completes the store; every image exact
    report = store.fill(workers=2)
    assert report['missing'] == 0 and store.count_valid() == n
    ref = LoadResizedImage(SCALE)
    for slot in range(n):
        assert np.array_equal(store.get(slot)[0],
                              ref(dict(img_path=store.paths[slot]))['img'])


KILL_AT = '''
import os, signal
from lmclip_mm.datasets.image_cache import ImageCache
calls = [0]
def kill_at(name, k):
    write = getattr(ImageCache, name)
    def wrapped(self, slot, data):
        if name != '_write_record' or any(data):  # not an invalidation
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
        return write(self, slot, data)
    setattr(ImageCache, name, wrapped)
kill_at({name!r}, {k})
'''


KILL_POINTS = [('_write_pixels', 1), ('_write_pixels', 40),
               ('_write_record', 1), ('_write_record', 30)]


def test_killed_at_each_write_step_nothing_wrong_is_served(
        real_photos, tmp_path):
    """SIGKILL exactly before the k-th pixel write or record write of a
    fill (one process per kill point, run side by side): whatever the store
    then serves is exact, and a later fill completes it."""
    runs = []
    for name, k in KILL_POINTS:
        work = tmp_path / f'{name}_{k}'
        root = write_set(work / 'set', real_photos, PHOTOS, copies=6)
        cache_dir = str(work / 'cache')
        runs.append((name, k, root, cache_dir, run_fill_script(
            root, cache_dir, delay=0, extra=KILL_AT.format(name=name, k=k))))
    ref = LoadResizedImage(SCALE)
    for name, k, root, cache_dir, proc in runs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == -signal.SIGKILL, out[-3000:]
        store = store_of(root, cache_dir)
        n = len(store.paths)
        served = 0
        for slot in range(n):
            hit = store.get(slot)
            if hit is not None:
                served += 1
                assert np.array_equal(hit[0], ref(dict(
                    img_path=store.paths[slot]))['img']), (name, k, slot)
        # the slots finished before the kill, not the one it interrupted
        assert served == k - 1, (name, k)
        assert store.fill()['missing'] == 0 and store.count_valid() == n


def test_a_record_is_trusted_only_whole(photo_set, cache_dir):
    ds = build(photo_set, cache_dir=cache_dir)
    store = ds.image_cache
    index = store._maps()[1]
    raw = bytes(index[:RECORD_SIZE])
    assert store.valid(0)
    for pos in (0, 5, 13, 17, 40):  # magic, shape, pixel crc, file, crc
        torn = bytearray(raw)
        torn[pos] ^= 0xFF
        index[:RECORD_SIZE] = bytes(torn)
        assert not store.valid(0) and store.get(0) is None, pos
    index[:RECORD_SIZE] = raw
    assert store.valid(0)
    # a record that names another file state is not served either
    st = os.stat(store.paths[0])
    rec = unpack_record(raw)
    index[:RECORD_SIZE] = pack_record(
        rec[0], (st.st_size + 1, st.st_mtime_ns, st.st_ino), rec[2])
    assert store.get(0) is None
    index[:RECORD_SIZE] = raw


def test_pixels_that_miss_their_crc_are_decoded_again(photo_set, cache_dir):
    """Pixels that do not match their record's CRC32 (as after a power loss
    that kept them from the disk) are decoded again by the next build."""
    ds = build(photo_set, cache_dir=cache_dir)
    store = ds.image_cache
    slot = int(ds._cache_slots[3])
    assert store.verified(slot)
    pixels = store._maps()[0]
    off = slot * store.slot_bytes + 1000
    pixels[off:off + 1] = bytes([pixels[off] ^ 0x01])
    assert store.valid(slot) and not store.verified(slot)
    rebuilt = build(photo_set, cache_dir=cache_dir)
    assert rebuilt.cache_report['computed'] == 1
    assert rebuilt.cache_report['reused'] == len(PHOTOS) - 1
    assert store.verified(slot)
    assert_same(sample(rebuilt, 3, 0),
                sample(build(photo_set, cache=False), 3, 0), 'refilled')


def test_concurrent_processes_never_decode_an_image_twice(
        real_photos, tmp_path, cache_dir):
    """Three processes (as DDP ranks or tuning workers) fill one store at
    the same time: every image is decoded exactly once overall."""
    root = write_set(tmp_path / 'set', real_photos, PHOTOS,
                     copies=(CHUNK * 6) // len(PHOTOS) + 1)
    n = len((root / 'train.txt').read_text().splitlines())
    store_of(root, cache_dir)  # created: the processes start at the fill
    ready = tmp_path / 'ready'
    ready.mkdir()
    barrier = (f'open(os.path.join({str(ready)!r}, str(os.getpid())), "w")'
               f'.close()\nwhile len(os.listdir({str(ready)!r})) < 3:\n'
               '    time.sleep(0.005)\n')
    procs = [run_fill_script(root, cache_dir, delay=0.01,
                             extra='import os\n' + barrier)
             for _ in range(3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    import json
    reports = []
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        line = [x for x in out.splitlines() if x.startswith('REPORT')][-1]
        reports.append(json.loads(line.split(' ', 1)[1]))
    assert sum(r['computed'] for r in reports) == n, reports
    assert all(r['computed'] + r['reused'] == n for r in reports), reports
    assert sum(r['computed'] > 0 for r in reports) >= 2, reports  # shared
    assert store_of(root, cache_dir).count_valid() == n


@pytest.mark.parametrize('processes', [True, False],
                         ids=['fill processes', 'fill threads'])
def test_fill_while_threads_read(real_photos, tmp_path, cache_dir,
                                 monkeypatch, processes):
    """Reader threads hammer the store while 4 workers (processes, as on
    Linux, or threads, as elsewhere) fill it: every image served is
    exact."""
    from lmclip_mm.datasets.image_cache import filling
    monkeypatch.setattr(filling, 'USE_PROCESSES', processes)
    root = write_set(tmp_path / 'set', real_photos, PHOTOS, copies=16)
    store = store_of(root, cache_dir)
    n = len(store.paths)
    ref = LoadResizedImage(SCALE)
    expected = [ref(dict(img_path=p))['img'] for p in store.paths[:9]]
    errors, hits = [], [0]
    stop = threading.Event()

    def reader(offset):
        while not stop.is_set():
            for slot in range(offset, n, 3):
                hit = store.get(slot)
                if hit is not None:
                    hits[0] += 1
                    if not np.array_equal(hit[0], expected[slot % 9]):
                        errors.append(slot)

    readers = [threading.Thread(target=reader, args=(k, )) for k in range(3)]
    for t in readers:
        t.start()
    try:
        report = store.fill(workers=4)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors and hits[0] > 0
    assert report['computed'] == n and store.count_valid() == n


def test_cache_location(photo_set, tmp_path, monkeypatch):
    monkeypatch.setenv('LMCLIP_CACHE_DIR', str(tmp_path / 'env'))
    assert default_cache_root() == str(tmp_path / 'env')
    by_env = build(photo_set)
    assert by_env.image_cache.dir.startswith(str(tmp_path / 'env') + os.sep)
    by_key = build(photo_set, cache_dir=str(tmp_path / 'key'))
    assert by_key.image_cache.dir.startswith(str(tmp_path / 'key') + os.sep)
    monkeypatch.delenv('LMCLIP_CACHE_DIR')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert default_cache_root() == str(tmp_path / 'xdg' / 'lmclip_mm' /
                                       'images')
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert default_cache_root() == str(tmp_path / 'home' / '.cache' /
                                       'lmclip_mm' / 'images')


def test_the_data_root_is_never_written(photo_set, cache_dir):
    def snapshot():
        return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                      for p in photo_set.rglob('*'))

    before = snapshot()
    build(photo_set, cache_dir=cache_dir)
    assert snapshot() == before


def test_log_states_the_size_and_shows_progress(photo_set, cache_dir,
                                                capfd, log_text):
    build(photo_set, cache_dir=cache_dir)
    out = ''.join(capfd.readouterr()) + log_text()
    assert 'image cache: new store' in out
    assert f'{len(PHOTOS)} images of' in out and 'MiB on disk when filled' \
        in out
    assert f'{len(PHOTOS)}/{len(PHOTOS)}' in out  # the progress bar
    assert f'image cache: {len(PHOTOS)} images decoded' in out
    done = len(log_text())
    build(photo_set, cache_dir=cache_dir)
    out = log_text()[done:]
    assert f'image cache: {len(PHOTOS)} images from' in out
    assert 'decoded' not in out


def test_unwritable_cache_root_warns_and_decodes(photo_set, tmp_path,
                                                 log_text):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    ds = build(photo_set, cache_dir=str(blocker / 'cache'))
    out = log_text()
    assert ds.image_cache is None
    assert 'cannot create' in out and 'LMCLIP_CACHE_DIR' in out
    assert_same(sample(ds, 0, 0), sample(build(photo_set, cache=False), 0,
                                         0), 'uncached')


def test_cache_needs_load_resized_image_first(photo_set, cache_dir,
                                              log_text):
    """A config that replaced a cached base's pipeline: one warning line,
    the images decoded on every use; an empty pipeline: nothing to say."""
    ds = build(photo_set, cache_dir=cache_dir, pipeline=OLD_TRAIN_PIPELINE)
    assert ds.image_cache is None
    lines = [x for x in log_text().splitlines() if 'LoadResizedImage' in x]
    assert len(lines) == 1 and 'starts with LoadImageFromFile' in lines[0]
    assert 'cache=False' in lines[0]
    assert_same(sample(ds, 1, 0),
                sample(build(photo_set, cache=False), 1, 0), 'uncached')
    done = len(log_text())
    assert build(photo_set, cache_dir=cache_dir,
                 pipeline=[{'type': 'LoadResizedImage', 'scale': 8}]
                 ).image_cache is not None
    empty = DATASETS.build(dict(
        type='LongTailMultiLabelDataset', data_root=str(photo_set),
        labels_file='labels.txt', train_file='train.txt',
        test_file='train.txt', cache=True, cache_dir=cache_dir))
    assert empty.image_cache is None and len(empty) == len(PHOTOS)
    assert 'LoadResizedImage transform' not in log_text()[done:]
    with pytest.raises(ValueError, match='True or False'):
        build(photo_set, cache='yes')


def test_an_undecodable_image_is_named_with_its_line(photo_set, cache_dir):
    bad = photo_set / 'img' / 'flower_0.jpg'
    data = bad.read_bytes()
    # JPEG start and end markers intact (the build-time check passes), the
    # middle garbage
    bad.write_bytes(data[:200] + b'\x00' * 5000 + data[-2:])
    with pytest.raises(DatasetFormatError) as e:
        build(photo_set, cache_dir=cache_dir)
    msg = str(e.value)
    assert 'train.txt' in msg and 'line 2' in msg and 'flower_0.jpg' in msg
