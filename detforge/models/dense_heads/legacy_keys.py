"""MMDetection 1.x head keys (``anchor_scales``, ``target_means``, ...) turned into the
2.x ``anchor_generator`` / ``bbox_coder`` configs, with a DeprecationWarning."""
from __future__ import annotations

import warnings

__all__ = ['translate_1x_head_keys']


def translate_1x_head_keys(anchor_generator: dict, bbox_coder: dict, anchor_scales, anchor_ratios,
                           anchor_strides, anchor_base_sizes, octave_base_scale,
                           scales_per_octave, target_means, target_stds) -> tuple[dict, dict]:
    """``(anchor_generator, bbox_coder)`` with the given 1.x keys merged in (None: not given).
    A 1.x scale key replaces the generator's whole scale spec."""
    anchor_keys = dict(scales=anchor_scales, ratios=anchor_ratios, strides=anchor_strides,
                       base_sizes=anchor_base_sizes, octave_base_scale=octave_base_scale,
                       scales_per_octave=scales_per_octave)
    given = {k: v for k, v in anchor_keys.items() if v is not None}
    if given:
        old = {'scales': 'anchor_scales', 'ratios': 'anchor_ratios', 'strides': 'anchor_strides',
               'base_sizes': 'anchor_base_sizes'}
        warnings.warn(
            f'head keys {", ".join(old.get(k, k) for k in given)} are deprecated (MMDetection 1.x); '
            f'write anchor_generator=dict(type="AnchorGenerator", '
            + ', '.join(f'{k}={v!r}' for k, v in given.items()) + ')', DeprecationWarning, stacklevel=4)
        anchor_generator = dict(anchor_generator)
        if 'octave_base_scale' in given or 'scales' in given:  # replace the scale spec wholesale
            for k in ('scales', 'octave_base_scale', 'scales_per_octave'):
                anchor_generator.pop(k, None)
        anchor_generator.update(given)
    if target_means is not None or target_stds is not None:
        warnings.warn('head keys target_means/target_stds are deprecated (MMDetection 1.x); write '
                      f'bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means={target_means!r}, '
                      f'target_stds={target_stds!r})', DeprecationWarning, stacklevel=4)
        bbox_coder = dict(bbox_coder)
        if target_means is not None:
            bbox_coder['target_means'] = list(target_means)
        if target_stds is not None:
            bbox_coder['target_stds'] = list(target_stds)
    return anchor_generator, bbox_coder
