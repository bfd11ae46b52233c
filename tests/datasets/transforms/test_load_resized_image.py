"""LoadResizedImage gives exactly what mmcv's pillow LoadImageFromFile +
pillow Resize give (the paper configs' former two steps), on real photos in
every mode a dataset meets, and is at least as fast as the paper's loader
(measured by tools/analysis/benchmark.py --part data, not here)."""
import numpy as np
import pytest
from mmcv.transforms import Compose
from mmengine.registry import init_default_scope
from mmpretrain.registry import TRANSFORMS

import lmclip_mm  # noqa: F401  registers the components
from lmclip_mm.datasets.transforms import LoadResizedImage

PHOTOS = ('china', 'flower', 'exif6', 'gray', 'cmyk', 'la', 'palette',
          'small', 'rgba')


def _two_step(scale, interpolation='bilinear'):
    init_default_scope('mmpretrain')
    return Compose([
        TRANSFORMS.build(dict(type='LoadImageFromFile',
                              imdecode_backend='pillow',
                              color_type='color_ignore_orientation')),
        TRANSFORMS.build(dict(type='Resize', scale=scale, backend='pillow',
                              interpolation=interpolation)),
    ])


@pytest.mark.parametrize('scale,interpolation',
                         [((224, 224), 'bilinear'), ((64, 64), 'bilinear'),
                          ((320, 200), 'bicubic')])
def test_equals_mmcv_load_then_resize(real_photos, scale, interpolation):
    ref = _two_step(scale, interpolation)
    ours = TRANSFORMS.build(dict(type='LoadResizedImage', scale=scale,
                                 interpolation=interpolation))
    for name in PHOTOS:
        a = ref(dict(img_path=real_photos[name]))
        b = ours(dict(img_path=real_photos[name]))
        assert a.keys() == b.keys(), name
        assert b['img'].dtype == np.uint8 and b['img'].flags.c_contiguous
        assert np.array_equal(a['img'], b['img']), name
        for key in a:
            if key != 'img':
                assert a[key] == b[key], (name, key)


def test_original_shape_ignores_exif_orientation(real_photos):
    out = LoadResizedImage(224)(dict(img_path=real_photos['exif6']))
    assert out['ori_shape'] == (427, 640)  # stored, not rotated
    assert out['img'].shape == (224, 224, 3)


def test_rgb_channel_order(real_photos):
    bgr = LoadResizedImage(224)(dict(img_path=real_photos['china']))['img']
    rgb = LoadResizedImage(224, channel_order='rgb')(
        dict(img_path=real_photos['china']))['img']
    assert np.array_equal(bgr[..., ::-1], rgb)


def test_an_array_is_resized_like_mmcv_resize(real_photos):
    """Inferencers hand arrays: resized as mmcv's pillow Resize does."""
    init_default_scope('mmpretrain')
    img = TRANSFORMS.build(dict(
        type='LoadImageFromFile', imdecode_backend='pillow',
        color_type='color_ignore_orientation'))(
            dict(img_path=real_photos['flower']))['img']
    ref = TRANSFORMS.build(dict(type='Resize', scale=(64, 48),
                                backend='pillow'))(dict(img=img.copy()))
    out = LoadResizedImage((64, 48))(dict(img=img.copy()))
    assert np.array_equal(out['img'], ref['img'])
    assert out['img'].shape == (48, 64, 3)
    assert out['ori_shape'] == img.shape[:2]
    assert out['scale_factor'] == ref['scale_factor']


@pytest.mark.parametrize('kwargs,message', [
    (dict(scale=(224, )), 'scale'), (dict(scale=0), 'scale'),
    (dict(scale=(224, 22.5)), 'scale'),
    (dict(scale=224, interpolation='area'), 'interpolation'),
    (dict(scale=224, channel_order='bgra'), 'channel_order'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoadResizedImage(**kwargs)


def test_missing_file_names_it(tmp_path):
    path = str(tmp_path / 'nope.jpg')
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        LoadResizedImage(224)(dict(img_path=path))


@pytest.mark.parametrize('channel_order', ['bgr', 'rgb'])
def test_channel_first_bytes_equal_the_array(real_photos, channel_order):
    """decode_chw (what the image cache stores) is the transform's output
    laid out channel-first."""
    t = LoadResizedImage((96, 64), channel_order=channel_order)
    for name in PHOTOS:
        with open(real_photos[name], 'rb') as f:
            data = f.read()
        img, ori = t.decode(data)
        chw, ori_chw = t.decode_chw(data)
        assert ori == ori_chw
        assert chw == np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
