"""``Albu``: run an albumentations pipeline on the image, its boxes and its bitmap masks
(optional dependency)."""
from __future__ import annotations

import copy

import numpy as np

from detforge.registry import PIPELINES, BuildError, DetforgeError
from detforge.structures.masks import BitmapMasks, PolygonMasks

__all__ = ['Albu']


def _build_albu(cfg, albumentations):
    """An albumentations transform from ``dict(type='Name', ...)`` (nested for OneOf etc.)."""
    args = dict(cfg)
    name = args.pop('type')
    cls = getattr(albumentations, name, None)
    if cls is None:
        raise BuildError(f'Albu: albumentations has no transform {name!r}', cfg)
    if 'transforms' in args:
        args['transforms'] = [_build_albu(t, albumentations) for t in args['transforms']]
    return cls(**args)


@PIPELINES.register_module()
class Albu:
    """Apply albumentations transforms (MMDetection 2.x's bridge).

    The image, ``gt_bboxes`` and ``gt_masks`` (``BitmapMasks``; load polygons with
    ``LoadAnnotations(with_mask=True, poly2mask=True)``) go through the same spatial
    transform. When albumentations drops a box (``BboxParams(min_visibility=...)``) its label
    fields and its mask are dropped with it, so ``gt_masks[i]`` stays the mask of
    ``gt_bboxes[i]``.

    Args:
        transforms: albumentations transform configs, ``dict(type='Blur', p=0.1)``.
        bbox_params: albumentations ``BboxParams`` arguments, e.g. ``dict(type='BboxParams',
            format='pascal_voc', label_fields=['gt_labels'], min_visibility=0.0)``.
        keymap: our keys -> albumentations keys, added to the defaults img->image,
            gt_bboxes->bboxes, gt_masks->masks.
        update_pad_shape: set ``pad_shape`` to the new image shape.
        skip_img_without_anno: drop the sample (return None) if no box is left.

    Needs ``pip install albumentations``; without it, building this transform is an error
    saying so.
    """

    def __init__(self, transforms, bbox_params=None, keymap=None, update_pad_shape=False,
                 skip_img_without_anno=False):
        try:
            import albumentations
        except ImportError:
            raise BuildError('Albu needs the albumentations package, which is not installed: '
                             'pip install albumentations (or remove Albu from the pipeline)') from None
        self.transforms = copy.deepcopy(list(transforms))
        self.bbox_params = copy.deepcopy(bbox_params)
        self.update_pad_shape = update_pad_shape
        self.skip_img_without_anno = skip_img_without_anno
        params = None
        if bbox_params is not None:
            bp = dict(bbox_params)
            bp.pop('type', None)
            self.label_fields = list(bp.get('label_fields', []))
            # labels travel by index so boxes dropped by albumentations drop their labels
            bp['label_fields'] = ['idx_mapper']
            params = albumentations.BboxParams(**bp)
        else:
            self.label_fields = []
        self.aug = albumentations.Compose([_build_albu(t, albumentations) for t in transforms],
                                          bbox_params=params)
        # a user's keymap adds to the defaults, so masks are never left behind unmoved
        self.keymap = {'img': 'image', 'gt_bboxes': 'bboxes', 'gt_masks': 'masks',
                       **(keymap or {})}

    def __call__(self, results: dict):
        data = {self.keymap.get(k, k): v for k, v in results.items()}
        masks_key = self.keymap['gt_masks']
        if masks_key in data:
            data[masks_key] = self._masks_to_list(data[masks_key], results)
        if 'bboxes' in data:
            data['idx_mapper'] = np.arange(len(data['bboxes']))
            data['bboxes'] = [list(b) for b in data['bboxes']]
        data = self.aug(**data)
        kept = None
        if 'bboxes' in data:
            boxes = np.asarray(data['bboxes'], dtype=np.float32).reshape(-1, 4)
            kept = np.asarray(data['idx_mapper'], dtype=np.int64)
            data['bboxes'] = boxes
            for field in self.label_fields:
                data[field] = np.asarray(results[field])[kept]
            if self.skip_img_without_anno and len(boxes) == 0:
                return None
        if masks_key in data:
            # albumentations transforms every mask but drops none: drop those whose box went
            masks = data[masks_key] if kept is None else [data[masks_key][i] for i in kept]
            height, width = data['image'].shape[:2]
            data[masks_key] = BitmapMasks(masks, height, width)
        back = {v: k for k, v in self.keymap.items()}
        out = {back.get(k, k): v for k, v in data.items() if k != 'idx_mapper'}
        out['img_shape'] = out['img'].shape
        if self.update_pad_shape:
            out['pad_shape'] = out['img'].shape
        return out

    @staticmethod
    def _masks_to_list(masks, results) -> list:
        """``BitmapMasks`` -> a list of ``(H, W)`` uint8 arrays, as albumentations takes them."""
        if isinstance(masks, PolygonMasks):
            raise DetforgeError(
                f"Albu: gt_masks of {results.get('filename', 'this image')} are polygons; "
                'albumentations moves bitmap masks only: load them with '
                'LoadAnnotations(with_mask=True, poly2mask=True)')
        if isinstance(masks, BitmapMasks):
            return list(masks.masks)
        return list(masks)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(transforms={self.transforms})'
