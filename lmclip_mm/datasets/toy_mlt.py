"""ToyMLT: a small synthetic long-tailed multi-label image set.

The embedded default data of the CPU quickstart. :func:`generate_toy_mlt`
draws it deterministically from a seed, in exactly the LMPT / LM-CLIP file
format::

    root/
        toy_labels.txt         "red circle 0" ... (20 classes)
        toy_lt_train.txt       "images/train/000000.jpg 3 7"
        toy_lt_test.txt        "images/test/000000.jpg 12"
        toy_lt_captions.txt    "images/train/000000.jpg a red circle ..."
        images/train/*.jpg     64x64 JPEG (quality 95)
        images/test/*.jpg
        .toy_mlt_complete      marker, written last

Classes are ``colour x shape`` (4 colours x 5 shapes). Each image shows 1-3
objects of distinct classes on a grey background, one per quadrant. The
number of train images containing class ``c`` follows an exponential long
tail from ``max_count`` down to ``min_count`` over the class ranks (the rank
of each class is drawn from the seed); with the defaults 280 -> 4 that is
5 head (>= 100), 7 middle and 8 tail (< 20) classes. The test split is
balanced: every class appears in exactly ``test_per_class`` test images.

The same seed gives byte-identical files.
"""
import os
import os.path as osp
import shutil
import tempfile
import uuid
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.logging import print_log
from mmpretrain.registry import DATASETS
from PIL import Image, ImageDraw

from .long_tail_multi_label_dataset import LongTailMultiLabelDataset

COLOURS = {
    'red': (215, 40, 40),
    'green': (40, 165, 60),
    'blue': (45, 80, 215),
    'yellow': (230, 205, 40),
}
SHAPES = ('circle', 'square', 'triangle', 'cross', 'star')
#: class id = colour index * len(SHAPES) + shape index
CLASSES = tuple(f'{c} {s}' for c in COLOURS for s in SHAPES)

LABELS_FILE = 'toy_labels.txt'
TRAIN_FILE = 'toy_lt_train.txt'
TEST_FILE = 'toy_lt_test.txt'
CAPTIONS_FILE = 'toy_lt_captions.txt'
IMAGE_DIR = 'images'
MARKER = '.toy_mlt_complete'
#: bump when the generated content changes
VERSION = 1

_QUADRANTS = ('top left', 'top right', 'bottom left', 'bottom right')
_TOY_NAMES = {LABELS_FILE, TRAIN_FILE, TEST_FILE, CAPTIONS_FILE, IMAGE_DIR,
              MARKER}


def long_tail_counts(num_classes: int, max_count: int,
                     min_count: int) -> List[int]:
    """Per-rank counts ``round(max * (min / max) ** (r / (C - 1)))``."""
    if not 0 < min_count <= max_count:
        raise ValueError('need 0 < min_count <= max_count, got '
                         f'{min_count}, {max_count}')
    if num_classes == 1:
        return [max_count]
    ratio = min_count / max_count
    return [
        int(round(max_count * ratio**(r / (num_classes - 1))))
        for r in range(num_classes)
    ]


def _pack(counts: Sequence[int], rng: np.random.Generator,
          objects_p: Sequence[float]) -> List[List[int]]:
    """Group class occurrences into images of 1-3 distinct classes.

    Class ``c`` ends up in exactly ``counts[c]`` images.
    """
    remaining = np.asarray(counts, dtype=np.int64).copy()
    sizes = np.arange(1, len(objects_p) + 1)
    images = []
    while remaining.sum() > 0:
        k = int(rng.choice(sizes, p=objects_p))
        avail = np.flatnonzero(remaining)
        k = min(k, avail.size)
        p = remaining[avail] / remaining[avail].sum()
        chosen = rng.choice(avail, size=k, replace=False, p=p)
        remaining[chosen] -= 1
        images.append([int(c) for c in chosen])
    return images


def _polygon_star(cx, cy, r):
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        a = -np.pi / 2 + i * np.pi / 5
        pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
    return pts


def _draw(draw: ImageDraw.ImageDraw, shape: str, box, colour) -> None:
    x0, y0, x1, y1 = box
    cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    if shape == 'circle':
        draw.ellipse(box, fill=colour)
    elif shape == 'square':
        draw.rectangle(box, fill=colour)
    elif shape == 'triangle':
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == 'cross':
        t = s / 6
        draw.rectangle((cx - t, y0, cx + t, y1), fill=colour)
        draw.rectangle((x0, cy - t, x1, cy + t), fill=colour)
    elif shape == 'star':
        draw.polygon(_polygon_star(cx, cy, s / 2), fill=colour)
    else:  # pragma: no cover
        raise ValueError(shape)


def _render(labels: Sequence[int], rng: np.random.Generator,
            size: int) -> Tuple[Image.Image, str]:
    """One image and its descriptive caption."""
    bg = int(rng.integers(100, 171))
    noise = rng.normal(0, 5, (size, size, 3))
    pixels = np.clip(bg + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, 'RGB')
    draw = ImageDraw.Draw(img)
    cell = size // 2
    quadrants = rng.permutation(4)[:len(labels)]
    parts = []
    for class_id, q in zip(labels, quadrants):
        colour_name = CLASSES[class_id].split(' ')[0]
        shape = SHAPES[class_id % len(SHAPES)]
        jitter = rng.integers(-20, 21, 3)
        colour = tuple(
            int(v) for v in np.clip(
                np.array(COLOURS[colour_name]) + jitter, 0, 255))
        s = int(rng.integers(int(cell * 0.55), int(cell * 0.85) + 1))
        ox = int(rng.integers(0, cell - s + 1))
        oy = int(rng.integers(0, cell - s + 1))
        x0 = (q % 2) * cell + ox
        y0 = (q // 2) * cell + oy
        _draw(draw, shape, (x0, y0, x0 + s - 1, y0 + s - 1), colour)
        size_word = 'small' if s < cell * 0.7 else 'large'
        parts.append(f'a {size_word} {CLASSES[class_id]} in the '
                     f'{_QUADRANTS[q]}')
    caption = ' and '.join(parts) + ' on a grey background.'
    return img, caption


def generate_toy_mlt(root: str,
                     seed: int = 0,
                     max_count: int = 280,
                     min_count: int = 4,
                     test_per_class: int = 30,
                     image_size: int = 64,
                     objects_p: Sequence[float] = (0.45, 0.35, 0.2)) -> Dict:
    """Write the toy set into ``root`` (created if needed); return a summary.

    Writes the marker file last. Use :func:`ensure_toy_mlt` for a safe,
    atomic generation on first use.

    Args:
        root: output folder.
        seed: the same seed gives byte-identical files.
        max_count / min_count: train images of the most / least frequent
            class.
        test_per_class: test images that contain each class.
        image_size: side of the square images.
        objects_p: probabilities of 1, 2, 3 objects per image.

    Returns:
        dict with ``num_train``, ``num_test``, ``class_counts`` (train
        ``n_c``) and ``test_counts``.
    """
    if len(objects_p) > 4:
        raise ValueError('at most 4 objects per image (one per quadrant)')
    rng = np.random.default_rng(seed)
    num_classes = len(CLASSES)
    by_rank = long_tail_counts(num_classes, max_count, min_count)
    order = rng.permutation(num_classes)  # order[r] = class of rank r
    train_counts = [0] * num_classes
    for rank, class_id in enumerate(order):
        train_counts[int(class_id)] = by_rank[rank]
    test_counts = [test_per_class] * num_classes
    splits = {
        'train': _pack(train_counts, rng, objects_p),
        'test': _pack(test_counts, rng, objects_p),
    }

    os.makedirs(root, exist_ok=True)
    with open(osp.join(root, LABELS_FILE), 'w', newline='\n') as f:
        f.writelines(f'{name} {i}\n' for i, name in enumerate(CLASSES))
    captions = []
    for split, images in splits.items():
        img_dir = osp.join(root, IMAGE_DIR, split)
        os.makedirs(img_dir, exist_ok=True)
        lines = []
        for i, labels in enumerate(images):
            rel = f'{IMAGE_DIR}/{split}/{i:06d}.jpg'
            img, caption = _render(labels, rng, image_size)
            img.save(osp.join(root, rel), format='JPEG', quality=95)
            lines.append(rel + ' ' + ' '.join(map(str, labels)) + '\n')
            captions.append(f'{rel} {caption}\n')
        split_file = TRAIN_FILE if split == 'train' else TEST_FILE
        with open(osp.join(root, split_file), 'w', newline='\n') as f:
            f.writelines(lines)
    with open(osp.join(root, CAPTIONS_FILE), 'w', newline='\n') as f:
        f.writelines(captions)
    with open(osp.join(root, MARKER), 'w', newline='\n') as f:
        f.write(_marker_text(seed))
    return dict(
        num_train=len(splits['train']),
        num_test=len(splits['test']),
        class_counts=train_counts,
        test_counts=test_counts)


def _marker_text(seed: int) -> str:
    return f'toy_mlt version={VERSION} seed={seed}\n'


def toy_mlt_is_complete(root: str, seed: int = 0) -> bool:
    """Whether ``root`` holds a complete toy set generated with ``seed``.

    Raises:
        ValueError: ``root`` holds a complete toy set of another seed or
            version.
    """
    marker = osp.join(root, MARKER)
    if not osp.isfile(marker):
        return False
    with open(marker) as f:
        found = f.read()
    if found != _marker_text(seed):
        raise ValueError(
            f'{marker}: {root} holds a toy set made with '
            f'{found.strip()!r}, not {_marker_text(seed).strip()!r}; use '
            'another data_root or delete this folder')
    return True


def ensure_toy_mlt(root: str, seed: int = 0,
                   log: Optional[Callable[[str], None]] = None) -> bool:
    """Generate the toy set into ``root`` unless it is already there
    (``log``, if given, is told before it generates and after it wrote).

    Safe when several processes start at once: each generates into its own
    temporary sibling folder and renames it to ``root``; the first rename
    wins and the others find the marker. A half-written ``root`` (no marker,
    only toy files) is moved aside and regenerated. A non-empty ``root``
    holding anything else is never touched.

    Returns:
        True if this call generated the set.
    """
    root = osp.abspath(osp.expanduser(str(root)))
    if toy_mlt_is_complete(root, seed):
        return False
    if log is not None:
        log(f'ToyMLT: generating the toy set (seed {seed}) into {root} '
            '(once, a few seconds)')
    parent, name = osp.split(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private (0700)
    try:
        generate_toy_mlt(tmp, seed=seed)
        for _ in range(10):
            try:
                os.rename(tmp, root)  # atomic; replaces an empty folder
                if log is not None:
                    log(f'ToyMLT: wrote the toy set to {root}')
                return True
            except OSError:
                pass
            if toy_mlt_is_complete(root, seed):
                return False  # another process won the race
            if not osp.isdir(root):
                raise FileExistsError(
                    f'{root} exists and is not a folder; cannot write the '
                    'toy set there')
            foreign = sorted(set(os.listdir(root)) - _TOY_NAMES)
            if foreign:
                raise FileExistsError(
                    f'{root} is not empty and holds no complete toy set '
                    f'(no {MARKER}); it also holds {foreign[:5]}, so it is '
                    'left alone: use another data_root')
            # A half-written toy set: move it aside, then retry.
            aside = osp.join(parent, f'.{name}.stale-{uuid.uuid4().hex}')
            try:
                os.rename(root, aside)
            except OSError:
                continue  # someone else moved or completed it meanwhile
            shutil.rmtree(aside, ignore_errors=True)
        raise RuntimeError(f'could not move the toy set into {root}')
    finally:
        if osp.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


@DATASETS.register_module()
class ToyMLT(LongTailMultiLabelDataset):
    """The toy long-tailed set; generated into ``data_root`` on first use.

    Config: ``dict(type='ToyMLT', data_root='data/toy_mlt', split='train',
    pipeline=[...], seed=0)``. 20 classes (4 colours x 5 shapes), about 800
    train and 350 test 64x64 images; head/middle/tail 5/7/8 with the default
    thresholds. Every other argument of :class:`LongTailMultiLabelDataset`
    is accepted (``caption_source='file'`` reads the descriptive captions of
    ``toy_lt_captions.txt``, which covers both splits).

    ``split='val'`` / ``holdout_val=True``: the held-out validation split
    (see :class:`LongTailMultiLabelDataset`); the honest-protocol quickstart
    ``configs/lmclip_toy_mlt_tiny_honest.py`` uses it.
    """

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 seed: int = 0,
                 **kwargs):
        ensure_toy_mlt(data_root, seed=seed,
                       log=lambda msg: print_log(msg, logger='current'))
        self.seed = seed
        super().__init__(
            labels_file=LABELS_FILE,
            train_file=TRAIN_FILE,
            test_file=TEST_FILE,
            captions_file=CAPTIONS_FILE,
            data_root=data_root,
            split=split,
            **kwargs)
