# Copyright (c) lmclip_mm authors.
"""Decode and resize with pillow in one step (the paper's preprocessing)."""
import io
import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS
from PIL import Image

#: pillow resampling filters by mmcv's interpolation names
#: (``mmcv.image.geometric.pillow_interp_codes``)
PIL_FILTERS = {
    'nearest': Image.NEAREST,
    'bilinear': Image.BILINEAR,
    'bicubic': Image.BICUBIC,
    'box': Image.BOX,
    'lanczos': Image.LANCZOS,
    'hamming': Image.HAMMING,
}

#: the canvas mmcv composites 'LA' images on (``mmcv.image.io``)
LA_CANVAS = (124, 117, 104)


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB image, converted as mmcv's pillow decoder converts it
    (``mmcv.image.io._pillow2array``): every mode with ``convert('RGB')``
    except ``'LA'``, which mmcv composites over a grey-brown canvas."""
    if img.mode == 'RGB':
        return img
    if img.mode != 'LA':
        return img.convert('RGB')
    rgba = img.convert('RGBA')
    canvas = Image.new('RGB', rgba.size, LA_CANVAS)
    canvas.paste(rgba, mask=rgba.split()[3])
    return canvas


@TRANSFORMS.register_module()
class LoadResizedImage(BaseTransform):
    """Load an image file and resize it to a fixed size, with pillow, in one
    step: the paper's ``Image.open(path).convert('RGB')`` +
    ``torchvision.transforms.Resize((h, w))``.

    Gives bit for bit what
    ``LoadImageFromFile(imdecode_backend='pillow',
    color_type='color_ignore_orientation')`` followed by
    ``Resize(scale=scale, backend='pillow', interpolation=interpolation)``
    gives (same ``img`` and the same result keys), without their round
    trips (pillow -> numpy -> pillow -> numpy): the file is decoded by
    pillow, converted to RGB (mmcv's conversion: an ``'LA'`` image is
    composited over mmcv's canvas), resized by pillow (antialiased; an image
    of the target size is only copied) and handed on as a uint8 array in
    ``channel_order`` (BGR by default, as mmcv loads images; the model's
    data preprocessor swaps it with ``to_rgb=True``). The EXIF orientation
    is ignored, as the paper does (``ImageOps.exif_transpose`` is never
    called).

    Everything it does is deterministic: a dataset can serve its output
    from an image cache (``LongTailMultiLabelDataset(cache=True)``,
    :mod:`lmclip_mm.datasets.image_cache`).

    Required keys: ``img_path``, or ``img`` (an array, e.g. from an
    inferencer: only resized). Added keys: ``img``, ``img_shape``,
    ``ori_shape``, ``scale``, ``scale_factor`` (``(w_scale, h_scale)``),
    ``keep_ratio`` (False).

    Args:
        scale (int | tuple[int, int]): output ``(width, height)``; an int
            is a square.
        interpolation (str): pillow filter by mmcv's name. Defaults to
            ``'bilinear'`` (torchvision's ``Resize`` default).
        channel_order (str): ``'bgr'`` (default, mmcv's) or ``'rgb'``.
    """

    def __init__(self,
                 scale: Union[int, Sequence[int]],
                 interpolation: str = 'bilinear',
                 channel_order: str = 'bgr'):
        if isinstance(scale, int):
            scale = (scale, scale)
        scale = tuple(scale)
        if len(scale) != 2 or not all(
                isinstance(s, int) and s > 0 for s in scale):
            raise ValueError('LoadResizedImage: scale must be a positive int '
                             f'or (width, height), got {scale!r}')
        if interpolation not in PIL_FILTERS:
            raise ValueError(
                f'LoadResizedImage: interpolation {interpolation!r} is not '
                f'one of {sorted(PIL_FILTERS)}')
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError("LoadResizedImage: channel_order must be 'bgr' "
                             f"or 'rgb', got {channel_order!r}")
        self.scale = scale
        self.interpolation = interpolation
        self.channel_order = channel_order

    def cache_key(self) -> dict:
        """What an image cache of this transform's output depends on."""
        import PIL
        return dict(type=type(self).__name__, scale=list(self.scale),
                    interpolation=self.interpolation,
                    channel_order=self.channel_order,
                    pillow=PIL.__version__)

    def load(self, path: str) -> Tuple[np.ndarray, Tuple[int, int]]:
        """``(img, (ori_h, ori_w))`` of the file ``path``."""
        with open(path, 'rb') as f:
            data = f.read()
        return self.decode(data)

    def decode(self, data: bytes) -> Tuple[np.ndarray, Tuple[int, int]]:
        """``(img, (ori_h, ori_w))`` of an encoded image."""
        bands, ori_shape = self._decode_bands(data)
        return np.array(Image.merge('RGB', bands)), ori_shape

    def decode_chw(self, data: bytes) -> Tuple[bytes, Tuple[int, int]]:
        """``(pixels, (ori_h, ori_w))``: what :meth:`decode` gives, as the
        bytes of the channel-first (3, H, W) array (the image cache's
        layout), taken band by band from pillow without a transposing
        copy."""
        bands, ori_shape = self._decode_bands(data)
        return b''.join(band.tobytes() for band in bands), ori_shape

    def _decode_bands(self, data: bytes):
        """The resized image's bands in ``channel_order`` (swapped by
        pillow: no strided numpy copy) and the original ``(h, w)``."""
        with Image.open(io.BytesIO(data)) as img:
            img = to_rgb(img)
            ori_shape = (img.height, img.width)
            bands = img.resize(self.scale,
                               PIL_FILTERS[self.interpolation]).split()
        if self.channel_order == 'bgr':
            bands = bands[::-1]
        return bands, ori_shape

    def resize_array(self, img: np.ndarray) -> np.ndarray:
        """Resize an array as mmcv's pillow ``Resize`` does."""
        if img.dtype != np.uint8:
            raise ValueError('LoadResizedImage: pillow resizes uint8 images '
                             f'only, got {img.dtype}')
        return np.array(Image.fromarray(img).resize(
            self.scale, PIL_FILTERS[self.interpolation]))

    def transform(self, results: dict) -> Optional[dict]:
        img = results.get('img')
        if img is None:
            img, ori_shape = self.load(os.fspath(results['img_path']))
        else:
            ori_shape = img.shape[:2]
            img = self.resize_array(img)
        return self.fill_results(results, img, ori_shape)

    def fill_results(self, results: dict, img: np.ndarray,
                     ori_shape: Tuple[int, int]) -> dict:
        """Set the keys this transform adds, for ``img`` of an original
        ``ori_shape`` (also used to serve a cached ``img``)."""
        h, w = ori_shape
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = (h, w)
        results['scale'] = self.scale
        results['scale_factor'] = (self.scale[0] / w, self.scale[1] / h)
        results['keep_ratio'] = False
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, '
                f'interpolation={self.interpolation!r}, '
                f'channel_order={self.channel_order!r})')
