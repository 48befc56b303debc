"""Instance masks of one image: ``BitmapMasks`` and ``PolygonMasks`` (MMDetection 2.x API).

Both hold ``n`` instance masks of an image of ``height x width`` pixels and move with the
image: ``rescale`` / ``resize`` / ``flip`` / ``crop`` / ``pad`` / ``translate``. The mask head
takes its training targets with ``crop_and_resize`` (the part of each gt mask inside an RoI,
resampled to ``28 x 28``). Polygons stay polygons through the pipeline (a few numbers per
instance instead of ``H x W`` bytes) and are rasterised only inside the RoIs.

Polygon coordinates are pixel coordinates of the image (x right, y down), COCO's convention:
a polygon point at ``(x, y)`` is a point of the plane, so an image flip maps ``x -> w - x``.
COCO segmentations are read with :mod:`pycocotools.mask` (``poly2mask``, RLE, ``encode``).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

__all__ = ['BitmapMasks', 'PolygonMasks', 'polygon_to_bitmap', 'segm_to_bitmap',
           'encode_mask_results', 'mask2rle', 'rle2mask']


def polygon_to_bitmap(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Polygons of one instance (each a flat ``[x0, y0, x1, y1, ...]``) -> bool ``(h, w)``
    mask, rasterised by pycocotools as COCO's own ``annToMask``."""
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in polygons],
                                 height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def segm_to_bitmap(segm, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (list of polygons, uncompressed RLE with a ``counts`` list, or
    compressed RLE with a ``counts`` string) -> uint8 ``(h, w)`` mask."""
    if isinstance(segm, list):
        return polygon_to_bitmap(segm, height, width).astype(np.uint8)
    if isinstance(segm, dict) and 'counts' in segm:
        rle = segm
        if isinstance(segm['counts'], list):  # uncompressed: compress first
            h, w = segm.get('size', (height, width))
            rle = mask_util.frPyObjects(segm, h, w)
        elif isinstance(segm['counts'], str):
            rle = dict(segm, counts=segm['counts'].encode('ascii'))
        return mask_util.decode(rle).astype(np.uint8)
    raise ValueError(f'a segmentation must be a list of polygons or an RLE dict with "counts", '
                     f'got {type(segm).__name__}')


def mask2rle(mask: np.ndarray) -> dict:
    """bool/uint8 ``(h, w)`` -> compressed RLE ``{'size': [h, w], 'counts': str}`` (JSON-ready)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def rle2mask(rle: dict) -> np.ndarray:
    """Compressed or uncompressed RLE -> bool ``(h, w)``."""
    h, w = rle['size']
    return segm_to_bitmap(rle, h, w).astype(bool)


def encode_mask_results(mask_results) -> list[list[dict]]:
    """Per class lists of bool ``(h, w)`` masks -> per class lists of compressed RLE dicts
    (MMDetection's ``encode_mask_results``; what ``single_gpu_test`` keeps for segm)."""
    return [[mask2rle(m) for m in per_class] for per_class in mask_results]


def _box_array(bbox) -> np.ndarray:
    return np.asarray(bbox.detach().cpu().numpy() if isinstance(bbox, torch.Tensor) else bbox,
                      dtype=np.float32)


class BitmapMasks:
    """``n`` binary masks, uint8 ``(n, height, width)``."""

    def __init__(self, masks, height: int, width: int):
        self.height, self.width = int(height), int(width)
        if len(masks) == 0:
            self.masks = np.zeros((0, self.height, self.width), dtype=np.uint8)
        else:
            self.masks = np.stack([np.asarray(m) for m in masks]).astype(np.uint8, copy=False)
            if self.masks.shape[1:] != (self.height, self.width):
                raise ValueError(f'BitmapMasks: masks of shape {self.masks.shape[1:]} for an image '
                                 f'of {self.height}x{self.width}')

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index) -> 'BitmapMasks':
        masks = self.masks[np.asarray(index) if isinstance(index, (list, np.ndarray)) else index]
        if masks.ndim == 2:
            masks = masks[None]
        return BitmapMasks(masks, self.height, self.width)

    def __repr__(self) -> str:
        return f'BitmapMasks(num_masks={len(self)}, height={self.height}, width={self.width})'

    @property
    def areas(self) -> np.ndarray:
        """Pixels per mask, float ``(n,)``."""
        return self.masks.sum((1, 2)).astype(np.float64)

    def to_ndarray(self) -> np.ndarray:
        return self.masks

    def to_tensor(self, dtype=torch.uint8, device='cpu') -> torch.Tensor:
        return torch.as_tensor(self.masks, dtype=dtype, device=device)

    # ------------------------------------------------------------------ geometry
    def resize(self, out_shape, interpolation: str = 'nearest') -> 'BitmapMasks':
        """To exactly ``out_shape = (h, w)`` (nearest neighbour by default, as MMDetection)."""
        h, w = int(out_shape[0]), int(out_shape[1])
        if len(self) == 0:
            return BitmapMasks([], h, w)
        flag = cv2.INTER_NEAREST if interpolation == 'nearest' else cv2.INTER_LINEAR
        return BitmapMasks([cv2.resize(m, (w, h), interpolation=flag) for m in self.masks], h, w)

    def rescale(self, scale, interpolation: str = 'nearest') -> 'BitmapMasks':
        """Keep the aspect ratio: ``scale`` is a factor or a ``(long, short)`` bound (mmcv's
        ``imrescale`` rule, as the image's ``Resize(keep_ratio=True)``)."""
        from detforge.data.pipelines.transforms import rescale_size
        new_w, new_h = rescale_size(self.width, self.height, scale)
        return self.resize((new_h, new_w), interpolation)

    def flip(self, direction: str = 'horizontal') -> 'BitmapMasks':
        axes = {'horizontal': (2,), 'vertical': (1,), 'diagonal': (1, 2)}
        if direction not in axes:
            raise ValueError(f"flip direction must be one of {sorted(axes)}, got {direction!r}")
        return BitmapMasks(np.flip(self.masks, axes[direction]).copy(), self.height, self.width)

    def pad(self, out_shape, pad_val: int = 0) -> 'BitmapMasks':
        """Pad at the bottom and right to ``out_shape = (h, w)``."""
        h, w = int(out_shape[0]), int(out_shape[1])
        out = np.full((len(self), h, w), pad_val, dtype=np.uint8)
        out[:, :self.height, :self.width] = self.masks
        return BitmapMasks(out, h, w)

    def crop(self, bbox) -> 'BitmapMasks':
        """Keep the window ``bbox = [x1, y1, x2, y2]`` (integer pixels, clipped to the image)."""
        x1, y1, x2, y2 = _crop_window(bbox, self.width, self.height)
        return BitmapMasks(self.masks[:, y1:y2, x1:x2], y2 - y1, x2 - x1)

    def translate(self, out_shape, offset: int, direction: str = 'horizontal',
                  fill_val: int = 0) -> 'BitmapMasks':
        """Shift the masks by ``offset`` pixels into a canvas of ``out_shape = (h, w)``."""
        h, w = int(out_shape[0]), int(out_shape[1])
        out = np.full((len(self), h, w), fill_val, dtype=np.uint8)
        dx, dy = (int(offset), 0) if direction == 'horizontal' else (0, int(offset))
        src = self.masks[:, max(0, -dy):, max(0, -dx):]
        ys, xs = max(0, dy), max(0, dx)
        ch, cw = min(src.shape[1], h - ys), min(src.shape[2], w - xs)
        if ch > 0 and cw > 0:
            out[:, ys:ys + ch, xs:xs + cw] = src[:, :ch, :cw]
        return BitmapMasks(out, h, w)

    def crop_and_resize(self, bboxes, out_shape, inds, device='cpu', interpolation='bilinear',
                        binarize: bool = True) -> 'BitmapMasks':
        """The part of mask ``inds[i]`` inside ``bboxes[i]``, resampled to ``out_shape``.

        Bilinear RoIAlign (``aligned=True``, adaptive sampling) of the 0/1 mask, then
        ``>= 0.5`` when ``binarize`` (MMDetection 2.x's mask targets).

        Args:
            bboxes: ``(k, 4)`` xyxy pixels (tensor or array).
            out_shape: ``(h, w)`` of each target, e.g. ``(28, 28)``.
            inds: ``(k,)`` index of the mask each box takes its target from.
        """
        from torchvision.ops import roi_align
        oh, ow = int(out_shape[0]), int(out_shape[1])
        boxes = torch.as_tensor(_box_array(bboxes), device=device).reshape(-1, 4)
        if len(boxes) == 0 or len(self) == 0:
            return BitmapMasks(np.zeros((0, oh, ow), np.uint8), oh, ow)
        inds = torch.as_tensor(_box_array(inds), device=device).long().reshape(-1)
        masks = torch.as_tensor(self.masks, device=device).index_select(0, inds)
        rois = torch.cat([torch.arange(len(boxes), device=device, dtype=boxes.dtype)[:, None],
                          boxes], dim=1)
        out = roi_align(masks[:, None].float(), rois, (oh, ow), 1.0, 0, True)[:, 0]
        out = (out >= 0.5).to(torch.uint8) if binarize else out
        return BitmapMasks(out.cpu().numpy(), oh, ow)


class PolygonMasks:
    """``n`` instances, each a list of polygons (flat float ``[x0, y0, x1, y1, ...]``)."""

    def __init__(self, masks: Sequence[Sequence], height: int, width: int):
        self.height, self.width = int(height), int(width)
        self.masks = [[np.asarray(p, dtype=np.float64).reshape(-1) for p in inst]
                      for inst in masks]

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index) -> 'PolygonMasks':
        if isinstance(index, np.ndarray) and index.dtype == bool:
            index = np.flatnonzero(index)
        if isinstance(index, (list, np.ndarray)):
            masks = [self.masks[int(i)] for i in index]
        elif isinstance(index, slice):
            masks = self.masks[index]
        else:
            masks = [self.masks[int(index)]]
        return PolygonMasks(masks, self.height, self.width)

    def __repr__(self) -> str:
        return f'PolygonMasks(num_masks={len(self)}, height={self.height}, width={self.width})'

    @property
    def areas(self) -> np.ndarray:
        """Shoelace area per instance (sum over its polygons), float ``(n,)``."""
        def area(p):
            x, y = p[0::2], p[1::2]
            return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        return np.array([sum(area(p) for p in inst) for inst in self.masks], dtype=np.float64)

    def _map(self, fn, height: int, width: int) -> 'PolygonMasks':
        return PolygonMasks([[fn(p.copy()) for p in inst] for inst in self.masks], height, width)

    def to_bitmap(self) -> BitmapMasks:
        return BitmapMasks([polygon_to_bitmap(inst, self.height, self.width)
                            for inst in self.masks], self.height, self.width)

    def to_ndarray(self) -> np.ndarray:
        return self.to_bitmap().masks

    def to_tensor(self, dtype=torch.uint8, device='cpu') -> torch.Tensor:
        return torch.as_tensor(self.to_ndarray(), dtype=dtype, device=device)

    # ------------------------------------------------------------------ geometry
    def resize(self, out_shape, interpolation=None) -> 'PolygonMasks':
        h, w = int(out_shape[0]), int(out_shape[1])
        sx, sy = w / self.width, h / self.height

        def scale(p):
            p[0::2] *= sx
            p[1::2] *= sy
            return p
        return self._map(scale, h, w)

    def rescale(self, scale, interpolation=None) -> 'PolygonMasks':
        from detforge.data.pipelines.transforms import rescale_size
        new_w, new_h = rescale_size(self.width, self.height, scale)
        return self.resize((new_h, new_w))

    def flip(self, direction: str = 'horizontal') -> 'PolygonMasks':
        if direction not in ('horizontal', 'vertical', 'diagonal'):
            raise ValueError(f'unknown flip direction {direction!r}')

        def flip(p):
            if direction in ('horizontal', 'diagonal'):
                p[0::2] = self.width - p[0::2]
            if direction in ('vertical', 'diagonal'):
                p[1::2] = self.height - p[1::2]
            return p
        return self._map(flip, self.height, self.width)

    def pad(self, out_shape, pad_val: int = 0) -> 'PolygonMasks':
        """Padding at the bottom and right moves no point: only the canvas grows."""
        return PolygonMasks(self.masks, int(out_shape[0]), int(out_shape[1]))

    def crop(self, bbox) -> 'PolygonMasks':
        """Shift into the window ``[x1, y1, x2, y2]`` and clip the points to it (as
        MMDetection 2.x; clipping keeps the rasterised mask exact for convex windows)."""
        x1, y1, x2, y2 = _crop_window(bbox, self.width, self.height)
        w, h = x2 - x1, y2 - y1

        def crop(p):
            p[0::2] = np.clip(p[0::2] - x1, 0, w)
            p[1::2] = np.clip(p[1::2] - y1, 0, h)
            return p
        return self._map(crop, h, w)

    def translate(self, out_shape, offset: float, direction: str = 'horizontal',
                  fill_val=None) -> 'PolygonMasks':
        h, w = int(out_shape[0]), int(out_shape[1])

        def shift(p):
            if direction == 'horizontal':
                p[0::2] = np.clip(p[0::2] + offset, 0, w)
            else:
                p[1::2] = np.clip(p[1::2] + offset, 0, h)
            return p
        return self._map(shift, h, w)

    def crop_and_resize(self, bboxes, out_shape, inds, device='cpu', interpolation='bilinear',
                        binarize: bool = True) -> BitmapMasks:
        """Rasterise polygon ``inds[i]`` inside box ``bboxes[i]`` at ``out_shape`` directly:
        points move by ``-(x1, y1)`` and scale by ``out / box size`` (box sides at least 1 px),
        then pycocotools fills them (MMDetection 2.x)."""
        oh, ow = int(out_shape[0]), int(out_shape[1])
        boxes = _box_array(bboxes).reshape(-1, 4)
        inds = _box_array(inds).astype(np.int64).reshape(-1)
        out = []
        for box, ind in zip(boxes, inds):
            x1, y1, x2, y2 = box.astype(np.float64)
            sx = ow / max(x2 - x1, 1.0)
            sy = oh / max(y2 - y1, 1.0)
            polys = []
            for p in self.masks[ind]:
                p = p.copy()
                p[0::2] = (p[0::2] - x1) * sx
                p[1::2] = (p[1::2] - y1) * sy
                polys.append(p)
            out.append(polygon_to_bitmap(polys, oh, ow))
        return BitmapMasks(out, oh, ow)


def _crop_window(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(v) for v in np.asarray(bbox).reshape(4))
    x1, x2 = np.clip([x1, x2], 0, width)
    y1, y2 = np.clip([y1, y2], 0, height)
    return int(x1), int(y1), int(max(x2, x1 + 1)), int(max(y2, y1 + 1))
