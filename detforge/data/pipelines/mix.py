"""Multi-image transforms: Mosaic, MixUp (MMDetection 2.x) and CachedMosaic, CachedMixUp
(MMDetection 3.x, RTMDet).

``Mosaic``/``MixUp`` run inside :class:`~detforge.data.MultiImageMixDataset`: each has
``get_indexes(dataset)`` (the other images it needs; the wrapper loads them into
``results['mix_results']``). ``CachedMosaic``/``CachedMixUp`` go in a plain data set's
pipeline: they keep the last few images they saw and mix with those, so no other image is
loaded. All draw their randomness from Python's ``random`` as MMDetection does (seeded per
sample by the loader); the caches are per loader worker, so what gets mixed depends on
``workers_per_gpu`` (as in MMDetection 3.x).
"""
from __future__ import annotations

import copy
import random

import cv2
import numpy as np

from detforge.registry import PIPELINES, BuildError

from ..image_meta import set_image

__all__ = ['Mosaic', 'MixUp', 'CachedMosaic', 'CachedMixUp', 'find_inside_bboxes']


def find_inside_bboxes(bboxes: np.ndarray, img_h: int, img_w: int) -> np.ndarray:
    """Boolean mask of the ``(n, 4)`` boxes that overlap the ``img_h x img_w`` image."""
    return ((bboxes[:, 0] < img_w) & (bboxes[:, 2] > 0)
            & (bboxes[:, 1] < img_h) & (bboxes[:, 3] > 0))


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return cv2.resize(img, (max(w, 1), max(h, 1)), interpolation=cv2.INTER_LINEAR)


def _refuse_masks(name: str, results: dict) -> None:
    """Mosaic and MixUp move boxes only: refuse instance masks rather than drop them."""
    if results.get('mask_fields'):
        from ..errors import DatasetError
        raise DatasetError(f'{name} does not move instance masks; remove it from a pipeline '
                           f'with LoadAnnotations(with_mask=True)')


@PIPELINES.register_module()
class Mosaic:
    """Four images around a random centre on a ``2h x 2w`` canvas (YOLOX / MMDet 2.x).

    Args:
        img_scale: ``(h, w)`` of each image's slot; the output is ``(2h, 2w)``.
        center_ratio_range: the centre is drawn in ``[lo, hi] * (w, h)``.
        min_bbox_size: with ``skip_filter=False``, boxes narrower or lower than this go.
        bbox_clip_border: clip boxes to the canvas.
        skip_filter: do not filter small boxes.
        pad_val: canvas fill value.
        prob: probability of applying the mosaic.
    """

    def __init__(self, img_scale=(640, 640), center_ratio_range=(0.5, 1.5), min_bbox_size=0,
                 bbox_clip_border=True, skip_filter=True, pad_val=114, prob=1.0):
        if not 0 <= prob <= 1:
            raise ValueError(f'Mosaic: prob must be in [0, 1], got {prob}')
        self.img_scale = tuple(img_scale)
        self.center_ratio_range = center_ratio_range
        self.min_bbox_size = min_bbox_size
        self.bbox_clip_border = bbox_clip_border
        self.skip_filter = skip_filter
        self.pad_val = pad_val
        self.prob = prob

    def get_indexes(self, dataset) -> list[int]:
        return [random.randint(0, len(dataset) - 1) for _ in range(3)]

    def _combine(self, loc: str, cx: int, cy: int, w: int, h: int):
        """Paste window on the canvas and crop window of the (resized) ``w x h`` image."""
        sh, sw = self.img_scale
        if loc == 'top_left':
            x1, y1, x2, y2 = max(cx - w, 0), max(cy - h, 0), cx, cy
            crop = w - (x2 - x1), h - (y2 - y1), w, h
        elif loc == 'top_right':
            x1, y1, x2, y2 = cx, max(cy - h, 0), min(cx + w, sw * 2), cy
            crop = 0, h - (y2 - y1), min(w, x2 - x1), h
        elif loc == 'bottom_left':
            x1, y1, x2, y2 = max(cx - w, 0), cy, cx, min(sh * 2, cy + h)
            crop = w - (x2 - x1), 0, w, min(y2 - y1, h)
        else:
            x1, y1, x2, y2 = cx, cy, min(cx + w, sw * 2), min(sh * 2, cy + h)
            crop = 0, 0, min(w, x2 - x1), min(y2 - y1, h)
        return (x1, y1, x2, y2), crop

    def __call__(self, results: dict) -> dict:
        _refuse_masks(type(self).__name__, results)
        if random.uniform(0, 1) > self.prob:
            return results
        if len(results.get('mix_results', ())) != 3:
            raise ValueError('Mosaic needs 3 mix_results (use it inside MultiImageMixDataset)')
        return self._mosaic(results, list(results['mix_results']))

    def _mosaic(self, results: dict, others: list) -> dict:
        """Tile ``results`` (top left) and the three ``others`` around a random centre."""
        sh, sw = self.img_scale
        img0 = results['img']
        canvas = np.full((sh * 2, sw * 2) + img0.shape[2:], self.pad_val, dtype=img0.dtype)
        cx = int(random.uniform(*self.center_ratio_range) * sw)
        cy = int(random.uniform(*self.center_ratio_range) * sh)
        boxes, labels = [], []
        parts = [results] + others
        for loc, part in zip(('top_left', 'top_right', 'bottom_left', 'bottom_right'), parts):
            img = part['img']
            h, w = img.shape[:2]
            ratio = min(sh / h, sw / w)
            img = _resize(img, int(w * ratio), int(h * ratio))
            (px1, py1, px2, py2), (cx1, cy1, cx2, cy2) = self._combine(loc, cx, cy, img.shape[1],
                                                                       img.shape[0])
            canvas[py1:py2, px1:px2] = img[cy1:cy2, cx1:cx2]
            b = part['gt_bboxes'].astype(np.float32) * ratio
            b[:, 0::2] += px1 - cx1
            b[:, 1::2] += py1 - cy1
            boxes.append(b)
            labels.append(part['gt_labels'])
        boxes = np.concatenate(boxes, 0)
        labels = np.concatenate(labels, 0)
        if self.bbox_clip_border:
            boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, 2 * sw)
            boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, 2 * sh)
        keep = find_inside_bboxes(boxes, 2 * sh, 2 * sw)
        if not self.skip_filter:
            keep &= ((boxes[:, 2] - boxes[:, 0]) > self.min_bbox_size) & \
                ((boxes[:, 3] - boxes[:, 1]) > self.min_bbox_size)
        set_image(results, canvas)
        results['gt_bboxes'] = boxes[keep]
        results['gt_labels'] = labels[keep]
        results.pop('gt_bboxes_ignore', None)
        results['bbox_fields'] = ['gt_bboxes']
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(img_scale={self.img_scale}, center_ratio_range='
                f'{self.center_ratio_range}, pad_val={self.pad_val}, prob={self.prob})')


@PIPELINES.register_module()
class MixUp:
    """Blend the image 50/50 with another one, rescaled, jittered, flipped and cropped
    (YOLOX / MMDet 2.x); the boxes of both are kept.

    Args:
        img_scale: ``(h, w)`` the other image is first fitted into.
        ratio_range: random scale jitter of the other image.
        flip_ratio: probability of flipping the other image horizontally.
        pad_val: fill value around the other image.
        max_iters: tries to find another image with boxes.
        min_bbox_size, min_area_ratio, max_aspect_ratio: box filter (``skip_filter=False``).
        bbox_clip_border: clip boxes.
        skip_filter: do not filter the other image's boxes.
    """

    def __init__(self, img_scale=(640, 640), ratio_range=(0.5, 1.5), flip_ratio=0.5, pad_val=114,
                 max_iters=15, min_bbox_size=5, min_area_ratio=0.2, max_aspect_ratio=20,
                 bbox_clip_border=True, skip_filter=True):
        self.img_scale = tuple(img_scale)
        self.ratio_range = ratio_range
        self.flip_ratio = flip_ratio
        self.pad_val = pad_val
        self.max_iters = max_iters
        self.min_bbox_size = min_bbox_size
        self.min_area_ratio = min_area_ratio
        self.max_aspect_ratio = max_aspect_ratio
        self.bbox_clip_border = bbox_clip_border
        self.skip_filter = skip_filter

    def get_indexes(self, dataset) -> int:
        index = 0
        for _ in range(self.max_iters):
            index = random.randint(0, len(dataset) - 1)
            if len(dataset.get_ann_info(index)['bboxes']):
                break
        return index

    def _keep(self, before: np.ndarray, after: np.ndarray, eps: float = 1e-16) -> np.ndarray:
        w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
        w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
        ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
        return ((w2 > self.min_bbox_size) & (h2 > self.min_bbox_size)
                & (w2 * h2 / (w1 * h1 + eps) > self.min_area_ratio) & (ar < self.max_aspect_ratio))

    def __call__(self, results: dict) -> dict:
        _refuse_masks(type(self).__name__, results)
        return self._mixup(results, results['mix_results'][0])

    def _mixup(self, results: dict, other: dict) -> dict:
        """Blend ``other`` (rescaled, jittered, maybe flipped, cropped) into ``results``."""
        if len(other['gt_bboxes']) == 0:
            return results
        jitter = random.uniform(*self.ratio_range)
        flip = random.uniform(0, 1) < self.flip_ratio
        src = other['img']
        sh, sw = self.img_scale
        canvas = np.full((sh, sw) + src.shape[2:], self.pad_val, dtype=src.dtype)
        ratio = min(sh / src.shape[0], sw / src.shape[1])
        src = _resize(src, int(src.shape[1] * ratio), int(src.shape[0] * ratio))
        canvas[:src.shape[0], :src.shape[1]] = src
        ratio *= jitter
        canvas = _resize(canvas, int(canvas.shape[1] * jitter), int(canvas.shape[0] * jitter))
        if flip:
            canvas = cv2.flip(canvas, 1)
        img = results['img']
        oh, ow = canvas.shape[:2]
        th, tw = img.shape[:2]
        padded = np.zeros((max(oh, th), max(ow, tw)) + img.shape[2:], dtype=np.uint8)
        padded[:oh, :ow] = canvas
        y_off = random.randint(0, padded.shape[0] - th) if padded.shape[0] > th else 0
        x_off = random.randint(0, padded.shape[1] - tw) if padded.shape[1] > tw else 0
        crop = padded[y_off:y_off + th, x_off:x_off + tw]

        boxes = other['gt_bboxes'].astype(np.float32) * ratio
        if self.bbox_clip_border:
            boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, ow)
            boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, oh)
        if flip:
            boxes[:, 0::2] = ow - boxes[:, 0::2][:, ::-1]
        moved = boxes - np.array([x_off, y_off, x_off, y_off], dtype=np.float32)
        if self.bbox_clip_border:
            moved[:, 0::2] = np.clip(moved[:, 0::2], 0, tw)
            moved[:, 1::2] = np.clip(moved[:, 1::2], 0, th)
        labels = other['gt_labels']
        if not self.skip_filter:
            keep = self._keep(boxes, moved)
            moved, labels = moved[keep], labels[keep]
        mixed = (0.5 * img.astype(np.float32) + 0.5 * crop.astype(np.float32))
        all_boxes = np.concatenate([results['gt_bboxes'], moved], 0)
        all_labels = np.concatenate([results['gt_labels'], labels], 0)
        inside = find_inside_bboxes(all_boxes, th, tw)
        # truncated to uint8 as MMDetection does (2.x and 3.x), not rounded
        set_image(results, mixed.astype(np.uint8) if img.dtype == np.uint8 else mixed)
        results['gt_bboxes'] = all_boxes[inside]
        results['gt_labels'] = all_labels[inside]
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(img_scale={self.img_scale}, ratio_range={self.ratio_range}, '
                f'flip_ratio={self.flip_ratio}, pad_val={self.pad_val})')


class _ImageCache:
    """The last ``max_cached_images`` results seen by one transform (in one loader worker).

    When full, the oldest (``random_pop=False``) or a random one is dropped, as in
    MMDetection 3.x's ``CachedMosaic``/``CachedMixUp``.
    """

    def __init__(self, max_cached_images: int, random_pop: bool, min_size: int, name: str):
        if max_cached_images < min_size:
            raise BuildError(f'{name}: max_cached_images must be at least {min_size}, got '
                             f'{max_cached_images}')
        self.max_cached_images = max_cached_images
        self.random_pop = random_pop
        self.items: list[dict] = []

    def push(self, results: dict) -> None:
        self.items.append(copy.deepcopy(results))
        if len(self.items) > self.max_cached_images:
            index = random.randint(0, len(self.items) - 1) if self.random_pop else 0
            self.items.pop(index)

    def __len__(self) -> int:
        return len(self.items)


def _xy_scale(name: str, img_scale) -> tuple[int, int]:
    """MMDetection 3.x's ``img_scale`` is ``(w, h)``; ours (2.x) is ``(h, w)``."""
    if len(img_scale) != 2:
        raise BuildError(f'{name}: img_scale must be (w, h), got {img_scale!r}')
    w, h = img_scale
    return int(h), int(w)


@PIPELINES.register_module()
class CachedMosaic(Mosaic):
    """Mosaic of this image and three drawn from a cache of recent ones (MMDetection 3.x).

    The image is added to the cache first; while the cache holds 4 images or fewer the
    image passes unchanged. Put it in the data set's own pipeline after
    ``LoadAnnotations`` (no :class:`~detforge.data.MultiImageMixDataset`).

    Args:
        img_scale: ``(w, h)`` of each slot, MMDetection 3.x's order; the output is ``(2h, 2w)``.
        max_cached_images: cache size (RTMDet-tiny: 20; 3.x default 40).
        random_pop: drop a random image from a full cache, else the oldest.
        center_ratio_range, min_bbox_size, bbox_clip_border, skip_filter, pad_val, prob:
            as :class:`Mosaic`.
    """

    def __init__(self, img_scale=(640, 640), center_ratio_range=(0.5, 1.5), min_bbox_size=0,
                 bbox_clip_border=True, skip_filter=True, pad_val=114.0, prob=1.0,
                 max_cached_images: int = 40, random_pop: bool = True):
        super().__init__(img_scale=_xy_scale('CachedMosaic', img_scale),
                         center_ratio_range=center_ratio_range, min_bbox_size=min_bbox_size,
                         bbox_clip_border=bbox_clip_border, skip_filter=skip_filter,
                         pad_val=pad_val, prob=prob)
        self.cache = _ImageCache(max_cached_images, random_pop, 4, 'CachedMosaic')

    def __call__(self, results: dict) -> dict:
        _refuse_masks(type(self).__name__, results)
        self.cache.push(results)
        if len(self.cache) <= 4:
            return results
        if random.uniform(0, 1) > self.prob:
            return results
        indexes = [random.randint(0, len(self.cache) - 1) for _ in range(3)]
        return self._mosaic(results, [copy.deepcopy(self.cache.items[i]) for i in indexes])

    def __repr__(self) -> str:
        return (super().__repr__()[:-1] + f', max_cached_images={self.cache.max_cached_images}, '
                f'random_pop={self.cache.random_pop})')


@PIPELINES.register_module()
class CachedMixUp(MixUp):
    """MixUp with an image drawn from a cache of recent ones (MMDetection 3.x).

    The image is added to the cache first; while the cache holds 1 image the image passes
    unchanged; otherwise, with probability ``prob``, a cached image with boxes (up to
    ``max_iters`` draws) is blended in as :class:`MixUp` does.

    Args:
        img_scale: ``(w, h)`` the other image is fitted into, MMDetection 3.x's order.
        max_cached_images: cache size (RTMDet-tiny: 10; 3.x default 20).
        random_pop: drop a random image from a full cache, else the oldest.
        prob: probability of mixing.
        ratio_range, flip_ratio, pad_val, max_iters, min_bbox_size, min_area_ratio,
            max_aspect_ratio, bbox_clip_border, skip_filter: as :class:`MixUp`
            (``flip_ratio`` is the probability of flipping).
    """

    def __init__(self, img_scale=(640, 640), ratio_range=(0.5, 1.5), flip_ratio=0.5,
                 pad_val=114.0, max_iters=15, min_bbox_size=5, min_area_ratio=0.2,
                 max_aspect_ratio=20, bbox_clip_border=True, skip_filter=True,
                 max_cached_images: int = 20, random_pop: bool = True, prob: float = 1.0):
        if not 0 <= prob <= 1:
            raise BuildError(f'CachedMixUp: prob must be in [0, 1], got {prob}')
        if isinstance(pad_val, (tuple, list)):  # 3.x configs give (114, 114, 114)
            pad_val = pad_val[0] if len(set(pad_val)) == 1 else np.asarray(pad_val)
        super().__init__(img_scale=_xy_scale('CachedMixUp', img_scale), ratio_range=ratio_range,
                         flip_ratio=flip_ratio, pad_val=pad_val, max_iters=max_iters,
                         min_bbox_size=min_bbox_size, min_area_ratio=min_area_ratio,
                         max_aspect_ratio=max_aspect_ratio, bbox_clip_border=bbox_clip_border,
                         skip_filter=skip_filter)
        self.prob = prob
        self.cache = _ImageCache(max_cached_images, random_pop, 2, 'CachedMixUp')

    def __call__(self, results: dict) -> dict:
        _refuse_masks(type(self).__name__, results)
        self.cache.push(results)
        if len(self.cache) <= 1:
            return results
        if random.uniform(0, 1) > self.prob:
            return results
        index = 0
        for _ in range(self.max_iters):
            index = random.randint(0, len(self.cache) - 1)
            if len(self.cache.items[index]['gt_bboxes']):
                break
        return self._mixup(results, copy.deepcopy(self.cache.items[index]))

    def __repr__(self) -> str:
        return (super().__repr__()[:-1] + f', prob={self.prob}, max_cached_images='
                f'{self.cache.max_cached_images}, random_pop={self.cache.random_pop})')
