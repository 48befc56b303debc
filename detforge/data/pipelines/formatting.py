"""Packing: numpy results -> torch tensors, and ``Collect`` of the keys the model needs."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from detforge.registry import PIPELINES

from ..image_meta import ImageMeta

__all__ = ['to_tensor', 'image_to_tensor', 'ImageToTensor', 'ToTensor', 'DefaultFormatBundle',
           'Collect', 'ToDataContainer', 'DEFAULT_META_KEYS']

DEFAULT_META_KEYS = ('filename', 'ori_filename', 'ori_shape', 'img_shape', 'pad_shape',
                     'scale_factor', 'flip', 'flip_direction', 'img_norm_cfg')


def to_tensor(data) -> torch.Tensor:
    """numpy array / sequence / number -> tensor (no copy for contiguous arrays)."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(data))
    if isinstance(data, Sequence) and not isinstance(data, str):
        return torch.tensor(data)
    if isinstance(data, int):
        return torch.LongTensor([data])
    if isinstance(data, float):
        return torch.FloatTensor([data])
    raise TypeError(f'type {type(data)} cannot be converted to a tensor')


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` (or ``(H, W)``) array -> contiguous ``(C, H, W)`` tensor, same dtype."""
    if img.ndim == 2:
        img = img[..., None]
    if 1 < img.shape[2] <= 4 and img.dtype in (np.uint8, np.float32):
        # the same planes as np.ascontiguousarray(img.transpose(2, 0, 1)), written by OpenCV
        # straight into the (C, H, W) array: one pass, about 3x faster than numpy's copy
        out = np.empty((img.shape[2],) + img.shape[:2], dtype=img.dtype)
        try:
            planes = cv2.split(img, list(out))
        except cv2.error:  # a view OpenCV cannot take
            planes = ()
        if len(planes) == len(out) and all(p.ctypes.data == q.ctypes.data
                                           for p, q in zip(planes, out)):
            return torch.from_numpy(out)
        if len(planes) == len(out):  # OpenCV wrote elsewhere: use its planes
            return torch.from_numpy(np.stack(planes))
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


@PIPELINES.register_module()
class ImageToTensor:
    """Turn the images under ``keys`` into ``(C, H, W)`` tensors (uint8 stays uint8)."""

    def __init__(self, keys: Sequence[str] = ('img',)):
        self.keys = list(keys)

    def __call__(self, results: dict) -> dict:
        for key in self.keys:
            results[key] = image_to_tensor(results[key])
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(keys={self.keys})'


@PIPELINES.register_module()
class ToTensor:
    """Turn the values under ``keys`` into tensors."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)

    def __call__(self, results: dict) -> dict:
        for key in self.keys:
            results[key] = to_tensor(results[key])
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(keys={self.keys})'


@PIPELINES.register_module()
class DefaultFormatBundle:
    """Pack the common fields: ``img`` -> uint8 ``(3, H, W)`` tensor; ``gt_bboxes``,
    ``gt_bboxes_ignore``, ``proposals`` -> float32 tensors; ``gt_labels`` -> int64.

    Also fills ``pad_shape`` (the image shape) and ``scale_factor`` (1.0) when no transform
    set them. Unlike MMDetection it does not invent an identity ``img_norm_cfg``: without
    ``Normalize`` the model's own ``data_preprocessor`` applies.
    """

    def __call__(self, results: dict) -> dict:
        if 'img' in results:
            img = results['img']
            results.setdefault('pad_shape', img.shape)
            results.setdefault('scale_factor', np.ones(4, dtype=np.float32))
            results['img'] = image_to_tensor(img)
        for key in ('proposals', 'gt_bboxes', 'gt_bboxes_ignore'):
            if key in results:
                results[key] = torch.from_numpy(np.ascontiguousarray(results[key], dtype=np.float32))
        if 'gt_labels' in results:
            results['gt_labels'] = torch.from_numpy(np.ascontiguousarray(results['gt_labels'],
                                                                         dtype=np.int64))
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


@PIPELINES.register_module()
class Collect:
    """Keep ``keys`` and gather ``meta_keys`` into ``img_metas``, an
    :class:`~detforge.data.image_meta.ImageMeta` (typed, and read by key as the dict of
    MMDetection 2.x).

    Args:
        keys: e.g. ``('img', 'gt_bboxes', 'gt_labels')``.
        meta_keys: default ``DEFAULT_META_KEYS``; keys absent from the results are left out.
            ``pad_size_divisor`` is added when a ``Pad`` recorded it (collate uses it).
    """

    def __init__(self, keys: Sequence[str], meta_keys: Sequence[str] = DEFAULT_META_KEYS):
        self.keys = list(keys)
        self.meta_keys = list(meta_keys)

    def __call__(self, results: dict) -> dict:
        metas = ImageMeta.from_dict({key: results[key] for key in self.meta_keys if key in results})
        if results.get('pad_size_divisor') is not None:
            metas['pad_size_divisor'] = results['pad_size_divisor']
        data = {'img_metas': metas}
        for key in self.keys:
            if key not in results:
                from ..errors import DatasetError
                raise DatasetError(f'Collect: key {key!r} is not in the results of the pipeline '
                                   f'(image {results.get("filename")}); available: '
                                   f'{sorted(results)}. Is LoadAnnotations missing?')
            data[key] = results[key]
        return data

    def __repr__(self) -> str:
        return f'{type(self).__name__}(keys={self.keys}, meta_keys={tuple(self.meta_keys)})'


@PIPELINES.register_module()
class ToDataContainer:
    """MMCV's ``DataContainer`` wrapping, kept so MMDetection 2.x pipelines run unchanged.

    detforge's ``collate`` already batches as the DataContainers asked: ``img`` stacked into
    one padded tensor, every other key a per-image list (``stack=False``). So this step only
    checks that its fields exist and ask for that behaviour.

    Args:
        fields: ``dict(key=..., stack=..., cpu_only=...)`` entries (MMDetection's default:
            ``img`` stacked, ``gt_bboxes`` and ``gt_labels`` not).
    """

    def __init__(self, fields=(dict(key='img', stack=True), dict(key='gt_bboxes'),
                               dict(key='gt_labels'))):
        from detforge.registry import BuildError
        self.fields = [dict(f) for f in fields]
        for i, field in enumerate(self.fields):
            if 'key' not in field:
                raise BuildError('ToDataContainer: each field needs a key', field,
                                 key_path=['fields', str(i)])
            if field.get('stack', False) and field['key'] != 'img':
                raise BuildError(f"ToDataContainer: only 'img' is stacked in a batch (the "
                                 f"others stay per-image lists), got stack=True for "
                                 f"{field['key']!r}", field, key_path=['fields', str(i)])

    def __call__(self, results: dict) -> dict:
        for field in self.fields:
            if field['key'] not in results:
                from ..errors import DatasetError
                raise DatasetError(f"ToDataContainer: key {field['key']!r} is not in the "
                                   f'results (available: {sorted(results)})')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(fields={tuple(self.fields)})'
