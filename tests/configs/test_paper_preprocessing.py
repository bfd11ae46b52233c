"""The paper configs' preprocessing equals the paper's code (issue 14.1).

The paper's code: ``PIL.Image.open(path).convert('RGB')`` (EXIF orientation
ignored), torchvision ``Resize((224, 224))`` on the PIL image (bilinear with
antialiasing), ``RandomHorizontalFlip`` for training, ``ToTensor`` and the
ImageNet ``Normalize``. Each paper config's actual pipeline (built through
the registry) plus its model's data preprocessor must give the same tensor,
to float rounding, on photo-like JPEGs with and without an EXIF orientation
tag.
"""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from PIL import Image

import lmclip_mm  # noqa: F401  registers the components

REPO = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = [
    'lmclip_voc_mlt_vitb16.py', 'lmclip_voc_mlt_rn50.py',
    'lmclip_coco_mlt_vitb16.py', 'lmclip_coco_mlt_rn50.py'
]
HONEST_CONFIGS = [c.replace('.py', '_honest.py') for c in PAPER_CONFIGS]
#: max |ours - torchvision| in normalised (std) units: float32 rounding of
#: (x - 255 m) / (255 s) vs (x / 255 - m) / s.
TOL = 1e-5


def _photo(width, height, seed, mode='RGB'):
    """Smooth colour gradients, a few blobs and sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        a, b, f = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * np.sin(a * x / 47 + b * y / 31 + f * 6)
        for _ in range(4):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            r = rng.uniform(10, 60)
            img[..., c] += rng.uniform(-80, 80) * np.exp(
                -((x - cx)**2 + (y - cy)**2) / (2 * r * r))
    img += rng.normal(0, 6, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), 'RGB')
    return pil.convert(mode) if mode != 'RGB' else pil


@pytest.fixture(scope='module')
def jpegs(tmp_path_factory):
    """(name, path): landscape / portrait, EXIF orientation 6 and 8, grey."""
    root = tmp_path_factory.mktemp('photos')
    out = []

    def save(name, img, orientation=None):
        path = root / f'{name}.jpg'
        kwargs = dict(format='JPEG', quality=90)
        if orientation is not None:
            exif = Image.Exif()
            exif[0x0112] = orientation
            kwargs['exif'] = exif.tobytes()
        img.save(path, **kwargs)
        out.append((name, path))

    save('landscape_500x375', _photo(500, 375, 0))
    save('portrait_375x500', _photo(375, 500, 1))
    save('exif6_500x375', _photo(500, 375, 2), orientation=6)
    save('exif8_333x500', _photo(333, 500, 3), orientation=8)
    save('grey_480x360', _photo(480, 360, 4, mode='L'))
    save('small_200x150', _photo(200, 150, 5))  # upsampled
    return out


def _torchvision(path, flip=False):
    from torchvision import transforms
    from torchvision.transforms import functional as F
    img = Image.open(path).convert('RGB')
    img = transforms.Resize((224, 224))(img)
    if flip:
        img = F.hflip(img)
    t = transforms.ToTensor()(img)
    return transforms.Normalize([0.485, 0.456, 0.406],
                                [0.229, 0.224, 0.225])(t)


def _build(cfg, pipeline_cfg):
    from mmpretrain.registry import MODELS, TRANSFORMS
    init_default_scope('mmpretrain')
    pipeline = Compose([TRANSFORMS.build(copy.deepcopy(t))
                        for t in pipeline_cfg])
    preprocessor = MODELS.build(copy.deepcopy(cfg.model.data_preprocessor))
    return pipeline, preprocessor


def _ours(pipeline, preprocessor, path):
    packed = pipeline(dict(img_path=str(path), caption='a photo of a x',
                           gt_label=[0]))
    data = preprocessor(
        dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]),
        training=False)
    return data['inputs'][0]


def _with_flip_prob(pipeline_cfg, prob):
    pipeline_cfg = copy.deepcopy(list(pipeline_cfg))
    flips = [t for t in pipeline_cfg if t['type'] == 'RandomFlip']
    assert len(flips) == 1, 'the paper trains with one horizontal flip'
    flips[0]['prob'] = prob
    assert flips[0].get('direction', 'horizontal') == 'horizontal'
    return pipeline_cfg


@pytest.mark.parametrize('config', PAPER_CONFIGS + HONEST_CONFIGS)
def test_config_pipelines_equal_the_papers_torchvision(config, jpegs):
    cfg = Config.fromfile(str(REPO / 'configs' / config))
    cases = {
        'test': (cfg.test_dataloader.dataset.pipeline, False),
        'val': (cfg.val_dataloader.dataset.pipeline, False),
        'train, no flip': (_with_flip_prob(
            cfg.train_dataloader.dataset.pipeline, 0.0), False),
        'train, flip': (_with_flip_prob(
            cfg.train_dataloader.dataset.pipeline, 1.0), True),
    }
    for case, (pipeline_cfg, flip) in cases.items():
        pipeline, preprocessor = _build(cfg, pipeline_cfg)
        for name, path in jpegs:
            ours = _ours(pipeline, preprocessor, path)
            ref = _torchvision(path, flip=flip)
            assert ours.dtype == torch.float32 and ours.shape == ref.shape \
                == (3, 224, 224), (config, case, name)
            diff = (ours - ref).abs().max().item()
            assert diff < TOL, (config, case, name, diff)


def test_exif_orientation_is_ignored_like_pil(jpegs):
    """The loader keeps the stored 500x375 of an orientation-6 JPEG (mmcv's
    default rotates it to 375x500): its original shape is 375 rows."""
    from mmpretrain.registry import TRANSFORMS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(str(REPO / 'configs' / PAPER_CONFIGS[0]))
    load = TRANSFORMS.build(copy.deepcopy(
        cfg.test_dataloader.dataset.pipeline[0]))
    path = dict(jpegs)['exif6_500x375']
    assert Image.open(path).getexif()[0x0112] == 6
    assert load(dict(img_path=str(path)))['ori_shape'] == (375, 500)
    rotating = TRANSFORMS.build(dict(type='LoadImageFromFile'))
    assert rotating(dict(img_path=str(path)))['img'].shape == (500, 375, 3)


def test_the_old_pipeline_differs(jpegs):
    """Guard of the test itself: cv2 bicubic without antialiasing and EXIF
    rotation are far from torchvision (so the comparison above can fail)."""
    cfg = Config.fromfile(str(REPO / 'configs' / PAPER_CONFIGS[0]))
    old = [dict(type='LoadImageFromFile'),
           dict(type='Resize', scale=(224, 224), interpolation='bicubic'),
           dict(type='PackInputs', algorithm_keys=['caption'])]
    pipeline, preprocessor = _build(cfg, old)
    for name, path in jpegs:
        diff = (_ours(pipeline, preprocessor, path) -
                _torchvision(path)).abs()
        assert diff.max().item() > 0.05, name
        if name.startswith('exif'):
            assert diff.mean().item() > 0.3, name
