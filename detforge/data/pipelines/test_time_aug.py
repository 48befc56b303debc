"""``MultiScaleFlipAug``: run the test transforms once per (scale, flip) pair."""
from __future__ import annotations

from detforge.registry import PIPELINES, BuildError
from .compose import Compose

__all__ = ['MultiScaleFlipAug']


@PIPELINES.register_module()
class MultiScaleFlipAug:
    """Test-time augmentation (MMDetection 2.x).

    Args:
        transforms: the transforms run for each augmentation (Resize, RandomFlip, ...).
        img_scale: a scale ``(w, h)`` or a list of them (sets ``results['scale']``), or
        scale_factor: a factor or a list of them (sets ``results['scale_factor']``).
        flip: also run flipped copies.
        flip_direction: direction(s) of the flipped copies.

    Returns ``dict(key=[value per augmentation])``, e.g. ``img`` is a list of tensors; the
    order is scales outer, (no flip, flip directions...) inner.
    """

    def __init__(self, transforms, img_scale=None, scale_factor=None, flip: bool = False,
                 flip_direction='horizontal'):
        if (img_scale is None) == (scale_factor is None):
            raise BuildError('MultiScaleFlipAug: give exactly one of img_scale and scale_factor')
        self.transforms = Compose(transforms)
        if img_scale is not None:
            self.img_scale = img_scale if isinstance(img_scale, list) else [img_scale]
            self.img_scale = [tuple(s) for s in self.img_scale]
            self.scale_key = 'scale'
        else:
            self.img_scale = scale_factor if isinstance(scale_factor, list) else [scale_factor]
            self.scale_key = 'scale_factor'
        self.flip = flip
        self.flip_direction = flip_direction if isinstance(flip_direction, list) else [flip_direction]

    def __call__(self, results: dict) -> dict:
        flip_args = [(False, None)]
        if self.flip:
            flip_args += [(True, d) for d in self.flip_direction]
        augs = []
        for scale in self.img_scale:
            for flip, direction in flip_args:
                r = results.copy()
                r[self.scale_key] = scale
                r['flip'] = flip
                r['flip_direction'] = direction
                augs.append(self.transforms(r))
        return {key: [a[key] for a in augs] for key in augs[0]}

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(transforms={self.transforms!r}, img_scale={self.img_scale}, '
                f'flip={self.flip}, flip_direction={self.flip_direction})')
