"""Geometric and photometric transforms (MMDetection 2.x semantics, uint8 images).

Every transform moves the boxes exactly with the image: the boxes in each key of
``results['bbox_fields']`` are xyxy pixels, 0-based, float32 ``(n, 4)``. The instance masks
in ``results['mask_fields']`` (``BitmapMasks`` / ``PolygonMasks``) move with them; ``Pad``
leaves them at the image size (collate pads images only; targets are cut inside RoIs).
"""
from __future__ import annotations

import sys
from typing import Sequence

import cv2
import numpy as np

from detforge.registry import PIPELINES, BuildError

from ..image_meta import set_image

__all__ = ['Resize', 'RandomFlip', 'Normalize', 'Pad', 'RandomCrop', 'PhotoMetricDistortion',
           'ResizeShortestEdge', 'RandomResize', 'YOLOXHSVRandomAug', 'rescale_size', 'bbox_flip']

_INTERP = {'nearest': cv2.INTER_NEAREST, 'bilinear': cv2.INTER_LINEAR, 'bicubic': cv2.INTER_CUBIC,
           'area': cv2.INTER_AREA, 'lanczos': cv2.INTER_LANCZOS4}
# Pillow's filters by the same names (Image.Resampling values: NEAREST 0, BILINEAR 2, BICUBIC 3,
# LANCZOS 1), for ResizeShortestEdge(backend='pillow')
_PIL_INTERP = {'nearest': 0, 'bilinear': 2, 'bicubic': 3, 'lanczos': 1}


def rescale_size(w: int, h: int, scale) -> tuple[int, int]:
    """MMCV's keep-ratio rule: the largest factor with long edge <= max(scale) and short edge
    <= min(scale) (or a plain float factor); returns the new ``(w, h)``, rounded half up."""
    if isinstance(scale, (int, float)):
        factor = float(scale)
    else:
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5)


def _resize_boxes(results: dict, scale_factor: np.ndarray, clip: bool) -> None:
    h, w = results['img_shape'][:2]
    for key in results.get('bbox_fields', []):
        boxes = results[key] * scale_factor
        if clip:
            boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
            boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
        results[key] = boxes.astype(np.float32)


def _resize_masks(results: dict) -> None:
    """Masks follow the image to exactly its new size (nearest neighbour for bitmaps)."""
    for key in results.get('mask_fields', []):
        results[key] = results[key].resize(results['img_shape'][:2])


def _set_resized_image(results: dict, img: np.ndarray, keep_ratio: bool) -> np.ndarray:
    h, w = results['img'].shape[:2]
    new_h, new_w = img.shape[:2]
    scale_factor = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    set_image(results, img)
    results['scale_factor'] = scale_factor
    results['keep_ratio'] = keep_ratio
    return scale_factor


@PIPELINES.register_module()
class Resize:
    """Resize the image and its boxes (MMDetection 2.x ``Resize``).

    Args:
        img_scale: ``(long, short)``-style scale ``(w, h)`` or a list of them.
        multiscale_mode: with several scales, 'range' samples the long and short edge
            uniformly between the scales, 'value' picks one of them.
        ratio_range: ``(min, max)``: the single ``img_scale`` times a random ratio.
        keep_ratio: rescale so the image fits ``(max(scale), min(scale))`` keeping its aspect
            ratio; otherwise resize to exactly ``(w, h)``.
        bbox_clip_border: clip boxes to the new image.
        backend: only 'cv2'.
        interpolation: 'bilinear', 'nearest', 'bicubic', 'area', 'lanczos'.
        override: let this Resize replace an earlier ``scale`` (two Resizes in a pipeline).

    Sets ``img_shape``, ``pad_shape``, ``scale_factor`` (float32 ``[w, h, w, h]`` with
    ``w_scale = new_w / w``), ``keep_ratio`` and ``scale``.
    """

    def __init__(self, img_scale=None, multiscale_mode: str = 'range', ratio_range=None,
                 keep_ratio: bool = True, bbox_clip_border: bool = True, backend: str = 'cv2',
                 interpolation: str = 'bilinear', override: bool = False):
        if img_scale is None:
            self.img_scale = None
        elif isinstance(img_scale, list) and img_scale and isinstance(img_scale[0], (list, tuple)):
            self.img_scale = [tuple(s) for s in img_scale]
        else:
            self.img_scale = [tuple(img_scale)]
        if ratio_range is not None and self.img_scale is not None and len(self.img_scale) != 1:
            raise BuildError('Resize: ratio_range needs exactly one img_scale')
        if multiscale_mode not in ('range', 'value'):
            raise BuildError(f"Resize: multiscale_mode must be 'range' or 'value', got {multiscale_mode!r}")
        if backend != 'cv2':
            raise BuildError(f"Resize: only backend='cv2' is supported, got {backend!r}")
        if interpolation not in _INTERP:
            raise BuildError(f'Resize: interpolation must be one of {sorted(_INTERP)}, got {interpolation!r}')
        self.multiscale_mode = multiscale_mode
        self.ratio_range = ratio_range
        self.keep_ratio = keep_ratio
        self.bbox_clip_border = bbox_clip_border
        self.backend = backend
        self.interpolation = interpolation
        self.override = override

    # --------------------------------------------------------------- scale sampling (as MMDet)
    def _random_scale(self) -> tuple:
        scales = self.img_scale
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            ratio = np.random.random_sample() * (hi - lo) + lo
            return int(scales[0][0] * ratio), int(scales[0][1] * ratio)
        if len(scales) == 1:
            return scales[0]
        if self.multiscale_mode == 'value':
            return scales[np.random.randint(len(scales))]
        longs = [max(s) for s in scales]
        shorts = [min(s) for s in scales]
        long_edge = np.random.randint(min(longs), max(longs) + 1)
        short_edge = np.random.randint(min(shorts), max(shorts) + 1)
        return long_edge, short_edge

    def __call__(self, results: dict) -> dict:
        if 'scale' not in results or self.override:
            if 'scale_factor' in results and not self.override:
                h, w = results['img'].shape[:2]
                sf = results['scale_factor']
                sf = float(sf) if np.ndim(sf) == 0 else float(np.asarray(sf).ravel()[0])
                results['scale'] = (int(w * sf), int(h * sf))
            else:
                if self.img_scale is None:
                    raise BuildError('Resize: no img_scale given and no scale in the results '
                                     '(set img_scale, or use it inside MultiScaleFlipAug)')
                results['scale'] = self._random_scale()
        scale = results['scale']
        img = results['img']
        h, w = img.shape[:2]
        if self.keep_ratio:
            new_w, new_h = rescale_size(w, h, scale)
        else:
            new_w, new_h = int(scale[0]), int(scale[1])
        if (new_w, new_h) != (w, h):
            img = cv2.resize(img, (new_w, new_h), interpolation=_INTERP[self.interpolation])
        scale_factor = _set_resized_image(results, img, self.keep_ratio)
        _resize_boxes(results, scale_factor, self.bbox_clip_border)
        _resize_masks(results)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(img_scale={self.img_scale}, multiscale_mode='
                f'{self.multiscale_mode!r}, ratio_range={self.ratio_range}, keep_ratio='
                f'{self.keep_ratio}, bbox_clip_border={self.bbox_clip_border}, '
                f'interpolation={self.interpolation!r})')


@PIPELINES.register_module()
class ResizeShortestEdge:
    """Detectron2's ``ResizeShortestEdge``: scale the short side to a sampled length, then
    shrink so the long side is at most ``max_size``; sizes rounded as ``int(x + 0.5)``.

    Args:
        short_edge_length (alias ``min_size``): an int, or a tuple: with
            ``sample_style='range'`` a ``(min, max)`` range sampled uniformly (integers),
            with 'choice' the candidate lengths.
        max_size: upper bound of the long side.
        sample_style: 'range' or 'choice'.
        interpolation: as :class:`Resize`.
        bbox_clip_border: clip boxes to the new image.
        backend: ``'cv2'`` (OpenCV) or ``'pillow'``: Detectron2 resizes uint8 images with
            Pillow, whose bilinear filter rounds differently from OpenCV's (pixels differ by
            1 here and there); ``'pillow'`` gives Detectron2's pixels exactly.
    """

    def __init__(self, short_edge_length=None, max_size: int = sys.maxsize,
                 sample_style: str = 'range', interpolation: str = 'bilinear',
                 bbox_clip_border: bool = True, min_size=None, backend: str = 'cv2'):
        length = short_edge_length if short_edge_length is not None else min_size
        if length is None:
            raise BuildError('ResizeShortestEdge needs short_edge_length (or min_size)')
        if isinstance(length, int):
            length = (length, length)
        if sample_style not in ('range', 'choice'):
            raise BuildError(f"ResizeShortestEdge: sample_style must be 'range' or 'choice', got {sample_style!r}")
        if sample_style == 'range' and len(length) != 2:
            raise BuildError(f"ResizeShortestEdge: sample_style='range' needs two lengths, got {length}")
        if backend not in ('cv2', 'pillow'):
            raise BuildError(f"ResizeShortestEdge: backend must be 'cv2' or 'pillow', got {backend!r}")
        if interpolation not in _INTERP or (backend == 'pillow' and interpolation not in _PIL_INTERP):
            raise BuildError(f'ResizeShortestEdge: interpolation must be one of '
                             f'{sorted(_PIL_INTERP if backend == "pillow" else _INTERP)}, got '
                             f'{interpolation!r}')
        self.backend = backend
        self.short_edge_length = tuple(length)
        self.max_size = max_size
        self.sample_style = sample_style
        self.interpolation = interpolation
        self.bbox_clip_border = bbox_clip_border

    @staticmethod
    def get_output_shape(oldh: int, oldw: int, short_edge_length: int, max_size: int):
        """``(newh, neww)`` as Detectron2 computes it."""
        size = float(short_edge_length)
        scale = size / min(oldh, oldw)
        if oldh < oldw:
            newh, neww = size, scale * oldw
        else:
            newh, neww = scale * oldh, size
        if max(newh, neww) > max_size:
            scale = max_size / max(newh, neww)
            newh, neww = newh * scale, neww * scale
        return int(newh + 0.5), int(neww + 0.5)

    def __call__(self, results: dict) -> dict:
        if self.sample_style == 'range':
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        img = results['img']
        h, w = img.shape[:2]
        if size == 0:
            new_h, new_w = h, w
        else:
            new_h, new_w = self.get_output_shape(h, w, int(size), self.max_size)
        if (new_w, new_h) != (w, h):
            img = self._resize(img, new_w, new_h)
        scale_factor = _set_resized_image(results, img, True)
        results['scale'] = (new_w, new_h)
        _resize_boxes(results, scale_factor, self.bbox_clip_border)
        _resize_masks(results)
        return results

    def _resize(self, img: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
        if self.backend == 'cv2':
            return cv2.resize(img, (new_w, new_h), interpolation=_INTERP[self.interpolation])
        from PIL import Image
        # as Detectron2's ResizeTransform: the channels go through Pillow as they are (BGR
        # stays BGR; the filter works on each channel alike)
        return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(
            (new_w, new_h), _PIL_INTERP[self.interpolation]))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(short_edge_length={self.short_edge_length}, max_size='
                f'{self.max_size}, sample_style={self.sample_style!r}, backend={self.backend!r})')


def bbox_flip(bboxes: np.ndarray, img_shape, direction: str) -> np.ndarray:
    """Flip ``(n, 4)`` xyxy boxes in an image of ``img_shape`` (h, w, ...): horizontally
    ``x1' = w - x2, x2' = w - x1`` (MMDetection 2.x, no ``-1``), vertically likewise in y,
    diagonally both."""
    h, w = img_shape[:2]
    flipped = bboxes.copy()
    if direction in ('horizontal', 'diagonal'):
        flipped[:, 0] = w - bboxes[:, 2]
        flipped[:, 2] = w - bboxes[:, 0]
    if direction in ('vertical', 'diagonal'):
        flipped[:, 1] = h - bboxes[:, 3]
        flipped[:, 3] = h - bboxes[:, 1]
    if direction not in ('horizontal', 'vertical', 'diagonal'):
        raise ValueError(f"flip direction must be 'horizontal', 'vertical' or 'diagonal', got {direction!r}")
    return flipped


_FLIP_CODE = {'horizontal': 1, 'vertical': 0, 'diagonal': -1}


@PIPELINES.register_module()
class RandomFlip:
    """Flip the image and its boxes at random (MMDetection 2.x ``RandomFlip``).

    Args:
        flip_ratio (alias ``prob``): probability of flipping; with a list of directions,
            a float is shared equally among them, or give one probability per direction.
        direction: 'horizontal', 'vertical', 'diagonal', or a list of them.

    If ``results['flip']`` is already set (``MultiScaleFlipAug``) it is obeyed. Sets
    ``flip`` (bool) and ``flip_direction`` (str or None).
    """

    def __init__(self, flip_ratio=None, direction='horizontal', prob=None):
        if prob is not None:
            flip_ratio = prob
        directions = direction if isinstance(direction, list) else [direction]
        for d in directions:
            if d not in _FLIP_CODE:
                raise BuildError(f"RandomFlip: direction must be 'horizontal', 'vertical' or "
                                 f"'diagonal', got {d!r}")
        if isinstance(flip_ratio, list):
            if len(flip_ratio) != len(directions):
                raise BuildError('RandomFlip: one flip_ratio per direction is needed')
            if not 0 <= sum(flip_ratio) <= 1:
                raise BuildError(f'RandomFlip: flip ratios must sum to at most 1, got {flip_ratio}')
        elif flip_ratio is not None and not 0 <= flip_ratio <= 1:
            raise BuildError(f'RandomFlip: flip_ratio must be in [0, 1], got {flip_ratio}')
        self.flip_ratio = flip_ratio
        self.direction = direction

    def _choose(self):
        directions = (self.direction if isinstance(self.direction, list) else [self.direction])
        if self.flip_ratio is None:
            return None
        if isinstance(self.flip_ratio, list):
            probs = list(self.flip_ratio) + [1 - sum(self.flip_ratio)]
        else:
            probs = [self.flip_ratio / len(directions)] * len(directions) + [1 - self.flip_ratio]
        # one uniform draw against the cumulative probabilities (np.random.choice with p=
        # is ten times slower per call)
        choice = int(np.searchsorted(np.cumsum(probs), np.random.random_sample(), side='right'))
        return directions[choice] if choice < len(directions) else None

    def __call__(self, results: dict) -> dict:
        if 'flip' not in results:
            direction = self._choose()
            results['flip'] = direction is not None
            results['flip_direction'] = direction
        elif 'flip_direction' not in results:
            results['flip_direction'] = (self.direction if not isinstance(self.direction, list)
                                         else self.direction[0]) if results['flip'] else None
        if results['flip']:
            direction = results['flip_direction']
            for key in results.get('img_fields', ['img']):
                results[key] = cv2.flip(results[key], _FLIP_CODE[direction])
            for key in results.get('bbox_fields', []):
                results[key] = bbox_flip(results[key], results['img_shape'], direction)
            for key in results.get('mask_fields', []):
                results[key] = results[key].flip(direction)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(flip_ratio={self.flip_ratio}, direction={self.direction!r})'


@PIPELINES.register_module()
class Normalize:
    """Record the normalisation for the model: ``img_norm_cfg = dict(mean, std, to_rgb)``.

    Pixels of a uint8 image are not touched (the model normalises on its device). A float
    image (``LoadImageFromFile(to_float32=True)``) is normalised here as in MMDetection 2.x,
    since the model takes floating inputs as already normalised.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_rgb: bool = True):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)
        self.to_rgb = to_rgb
        if self.mean.shape != self.std.shape or np.any(self.std == 0):
            raise BuildError(f'Normalize: mean and std must have the same length and std != 0, '
                             f'got mean={list(mean)}, std={list(std)}')

    def __call__(self, results: dict) -> dict:
        for key in results.get('img_fields', ['img']):
            img = results[key]
            if np.issubdtype(img.dtype, np.floating):
                img = img.astype(np.float32)
                if self.to_rgb and img.ndim == 3:
                    img = img[..., ::-1]
                results[key] = np.ascontiguousarray((img - self.mean) / self.std, dtype=np.float32)
        results['img_norm_cfg'] = dict(mean=self.mean.copy(), std=self.std.copy(), to_rgb=self.to_rgb)
        return results

    def __repr__(self) -> str:
        mean = [round(float(x), 6) for x in self.mean]
        std = [round(float(x), 6) for x in self.std]
        return (f'{type(self).__name__}(mean={mean}, std={std}, '
                f'to_rgb={self.to_rgb})')


@PIPELINES.register_module()
class Pad:
    """Record the padding; the pixels are padded by ``collate`` (zeros, image at top-left).

    Args:
        size: fixed ``(h, w)`` to pad to.
        size_divisor: pad h and w up to a multiple of this.
        pad_to_square: pad to a square of the longer side.
        pad_val: kept for config compatibility; the padded area is zero and the model's
            preprocessor zeroes it after normalisation.

    Sets ``pad_shape``, ``pad_fixed_size`` and ``pad_size_divisor``.
    """

    def __init__(self, size=None, size_divisor=None, pad_to_square: bool = False, pad_val=0):
        if pad_to_square:
            if size is not None or size_divisor is not None:
                raise BuildError('Pad: pad_to_square excludes size and size_divisor')
        elif (size is None) == (size_divisor is None):
            raise BuildError('Pad: give exactly one of size and size_divisor')
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_to_square = pad_to_square
        self.pad_val = pad_val

    def __call__(self, results: dict) -> dict:
        shape = results['img'].shape
        h, w = shape[:2]
        if self.pad_to_square:
            size = (max(h, w), max(h, w))
        else:
            size = self.size
        if size is not None:
            ph, pw = max(h, size[0]), max(w, size[1])
        else:
            d = self.size_divisor
            ph, pw = -(-h // d) * d, -(-w // d) * d
        results['pad_shape'] = (ph, pw) + tuple(shape[2:])
        results['pad_fixed_size'] = size
        results['pad_size_divisor'] = self.size_divisor
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, size_divisor={self.size_divisor}, '
                f'pad_to_square={self.pad_to_square})')


_BOX_TO_LABEL = {'gt_bboxes': 'gt_labels', 'gt_bboxes_ignore': 'gt_labels_ignore'}
_BOX_TO_MASK = {'gt_bboxes': 'gt_masks'}


@PIPELINES.register_module()
class RandomCrop:
    """Crop a random window (MMDetection 2.x ``RandomCrop``).

    Args:
        crop_size: ``(h, w)``: pixels ('absolute'), a fraction of the image ('relative'),
            a range of pixels ('absolute_range', ``(min, max)`` for both sides) or of fractions
            ('relative_range', the minimum fractions, up to 1).
        crop_type: see ``crop_size``.
        allow_negative_crop: keep a crop without any ground-truth box (else the sample is
            dropped: the transform returns None and the dataset draws another image).
        bbox_clip_border: clip boxes to the crop. Boxes left with no area are removed with
            their labels.
    """

    def __init__(self, crop_size, crop_type: str = 'absolute', allow_negative_crop: bool = False,
                 recompute_bbox: bool = False, bbox_clip_border: bool = True):
        if crop_type not in ('relative_range', 'relative', 'absolute', 'absolute_range'):
            raise BuildError(f'RandomCrop: invalid crop_type {crop_type!r}')
        if crop_type in ('absolute', 'absolute_range'):
            if crop_size[0] <= 0 or crop_size[1] <= 0:
                raise BuildError(f'RandomCrop: crop_size must be positive, got {crop_size}')
        elif not (0 < crop_size[0] <= 1 and 0 < crop_size[1] <= 1):
            raise BuildError(f'RandomCrop: relative crop_size must be in (0, 1], got {crop_size}')
        self.crop_size = crop_size
        self.crop_type = crop_type
        self.allow_negative_crop = allow_negative_crop
        self.bbox_clip_border = bbox_clip_border

    def _get_crop_size(self, h: int, w: int) -> tuple[int, int]:
        c = self.crop_size
        if self.crop_type == 'absolute':
            return min(c[0], h), min(c[1], w)
        if self.crop_type == 'absolute_range':
            return (np.random.randint(min(h, c[0]), min(h, c[1]) + 1),
                    np.random.randint(min(w, c[0]), min(w, c[1]) + 1))
        if self.crop_type == 'relative':
            return int(h * c[0] + 0.5), int(w * c[1] + 0.5)
        size = np.asarray(c, dtype=np.float32)
        ch, cw = size + np.random.rand(2) * (1 - size)
        return int(h * ch + 0.5), int(w * cw + 0.5)

    def __call__(self, results: dict):
        h, w = results['img'].shape[:2]
        crop_h, crop_w = self._get_crop_size(h, w)
        off_h = np.random.randint(0, max(h - crop_h, 0) + 1)
        off_w = np.random.randint(0, max(w - crop_w, 0) + 1)
        for key in results.get('img_fields', ['img']):
            if key != 'img':
                results[key] = results[key][off_h:off_h + crop_h, off_w:off_w + crop_w]
        # img_shape and pad_shape follow the crop (the pad_shape of the uncropped image
        # made collate pad a 384x384 crop to 800x1088)
        set_image(results, results['img'][off_h:off_h + crop_h, off_w:off_w + crop_w])
        shape = results['img'].shape
        offset = np.array([off_w, off_h, off_w, off_h], dtype=np.float32)
        for key in results.get('bbox_fields', []):
            boxes = results[key] - offset
            if self.bbox_clip_border:
                boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, shape[1])
                boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, shape[0])
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if key == 'gt_bboxes' and not valid.any() and not self.allow_negative_crop:
                return None
            results[key] = boxes[valid]
            label_key = _BOX_TO_LABEL.get(key)
            if label_key in results:
                results[label_key] = results[label_key][valid]
            mask_key = _BOX_TO_MASK.get(key)
            if mask_key in results.get('mask_fields', []):
                window = np.array([off_w, off_h, off_w + shape[1], off_h + shape[0]])
                results[mask_key] = results[mask_key][np.flatnonzero(valid)].crop(window)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(crop_size={self.crop_size}, crop_type={self.crop_type!r}, '
                f'allow_negative_crop={self.allow_negative_crop}, '
                f'bbox_clip_border={self.bbox_clip_border})')


@PIPELINES.register_module()
class PhotoMetricDistortion:
    """Random brightness, contrast, saturation, hue and channel swap (MMDetection 2.x order:
    brightness, contrast first or last at random, saturation, hue, channel permutation).

    Works in float32; a uint8 image comes back as uint8 (rounded and clipped to 0..255).
    """

    def __init__(self, brightness_delta: int = 32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta: int = 18):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, results: dict) -> dict:
        img = results['img']
        was_uint8 = img.dtype == np.uint8
        img = img.astype(np.float32)
        if np.random.randint(2):
            img += np.random.uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = np.random.randint(2)
        if contrast_first == 1 and np.random.randint(2):
            img *= np.random.uniform(self.contrast_lower, self.contrast_upper)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        if np.random.randint(2):
            hsv[..., 1] *= np.random.uniform(self.saturation_lower, self.saturation_upper)
        if np.random.randint(2):
            hsv[..., 0] += np.random.uniform(-self.hue_delta, self.hue_delta)
            hsv[..., 0] = np.mod(hsv[..., 0], 360)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if contrast_first == 0 and np.random.randint(2):
            img *= np.random.uniform(self.contrast_lower, self.contrast_upper)
        if np.random.randint(2):
            img = img[..., np.random.permutation(3)]
        if was_uint8:
            img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        results['img'] = np.ascontiguousarray(img)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(brightness_delta={self.brightness_delta}, contrast_range='
                f'{(self.contrast_lower, self.contrast_upper)}, saturation_range='
                f'{(self.saturation_lower, self.saturation_upper)}, hue_delta={self.hue_delta})')


@PIPELINES.register_module()
class RandomResize:
    """Resize to a randomly drawn scale (MMCV 2.x / MMDetection 3.x ``RandomResize``).

    Args:
        scale: ``(w, h)``; or two of them, ``[(w1, h1), (w2, h2)]``: then ``w`` is drawn in
            ``[min(w1, w2), max(w1, w2)]`` and ``h`` likewise (integers, both ends included).
        ratio_range: with one ``scale``: ``(lo, hi)``, the scale times a ratio drawn uniformly
            in ``[lo, hi)`` (RTMDet: ``scale=(640, 640), ratio_range=(0.5, 2.0)``).
        keep_ratio: fit the image into the drawn scale keeping its aspect ratio (long edge
            <= max, short edge <= min, as :class:`Resize`), else resize to exactly ``(w, h)``.
        clip_object_border (alias ``bbox_clip_border``): clip boxes to the new image.
        interpolation: as :class:`Resize`.
        resize_type: only 'Resize'.

    The boxes are scaled with the image; sets what :class:`Resize` sets (``scale`` is the
    drawn ``(w, h)``).
    """

    def __init__(self, scale, ratio_range=None, keep_ratio: bool = True,
                 clip_object_border: bool = True, interpolation: str = 'bilinear',
                 resize_type: str = 'Resize', bbox_clip_border: bool | None = None):
        if resize_type != 'Resize':
            raise BuildError(f"RandomResize: only resize_type='Resize' is supported, got "
                             f"{resize_type!r}")
        if isinstance(scale, (list, tuple)) and scale and isinstance(scale[0], (list, tuple)):
            self.scale = [tuple(int(v) for v in s) for s in scale]
            if len(self.scale) != 2 or ratio_range is not None:
                raise BuildError(f'RandomResize: give one scale (w, h) with ratio_range, or two '
                                 f'scales without it; got scale={scale!r}, '
                                 f'ratio_range={ratio_range!r}')
        elif isinstance(scale, (list, tuple)) and len(scale) == 2:
            self.scale = tuple(int(v) for v in scale)
        else:
            raise BuildError(f'RandomResize: scale must be (w, h) or [(w1, h1), (w2, h2)], '
                             f'got {scale!r}')
        if ratio_range is not None and not (len(ratio_range) == 2
                                            and 0 < ratio_range[0] <= ratio_range[1]):
            raise BuildError(f'RandomResize: ratio_range must be (lo, hi) with 0 < lo <= hi, '
                             f'got {ratio_range!r}')
        self.ratio_range = ratio_range
        self.keep_ratio = keep_ratio
        if bbox_clip_border is not None:
            clip_object_border = bbox_clip_border
        self._resize = Resize(img_scale=None, keep_ratio=keep_ratio,
                              bbox_clip_border=clip_object_border, interpolation=interpolation)

    def draw_scale(self) -> tuple[int, int]:
        """The ``(w, h)`` of this call, from ``np.random`` (as MMCV draws it)."""
        if isinstance(self.scale, list):
            (w1, h1), (w2, h2) = self.scale
            return (np.random.randint(min(w1, w2), max(w1, w2) + 1),
                    np.random.randint(min(h1, h2), max(h1, h2) + 1))
        if self.ratio_range is None:
            return self.scale
        lo, hi = self.ratio_range
        ratio = np.random.random_sample() * (hi - lo) + lo
        return int(self.scale[0] * ratio), int(self.scale[1] * ratio)

    def __call__(self, results: dict) -> dict:
        results['scale'] = self.draw_scale()
        return self._resize(results)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, ratio_range={self.ratio_range}, '
                f'keep_ratio={self.keep_ratio})')


@PIPELINES.register_module()
class YOLOXHSVRandomAug:
    """Shift hue, saturation and value by random integers (YOLOX, MMDetection 2.x/3.x).

    Each of the three gains is drawn in ``(-delta, delta)`` and kept or zeroed with
    probability 1/2 (``np.random``, in MMDetection's order); hue wraps modulo 180 (OpenCV's
    8-bit hue), saturation and value are clipped to 0..255. The image must be a BGR uint8
    image (the colour conversion's ranges are those of 8 bits); boxes are untouched.

    Args:
        hue_delta, saturation_delta, value_delta: the largest shifts.
    """

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30):
        self.hue_delta = hue_delta
        self.saturation_delta = saturation_delta
        self.value_delta = value_delta

    def draw_gains(self) -> np.ndarray:
        """``(3,)`` int16 gains for hue, saturation, value."""
        gains = np.random.uniform(-1, 1, 3) * [self.hue_delta, self.saturation_delta,
                                               self.value_delta]
        gains *= np.random.randint(0, 2, 3)  # each channel shifted or not
        return gains.astype(np.int16)  # truncated towards zero, as MMDetection

    def __call__(self, results: dict) -> dict:
        img = results['img']
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'YOLOXHSVRandomAug needs a 3-channel uint8 BGR image (put it '
                             f'before Normalize); got {img.dtype} of shape {img.shape}')
        gains = self.draw_gains()
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
        results['img'] = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(hue_delta={self.hue_delta}, saturation_delta='
                f'{self.saturation_delta}, value_delta={self.value_delta})')
