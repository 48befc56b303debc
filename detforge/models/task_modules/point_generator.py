"""Points on every feature level: the priors of anchor-free heads (FCOS)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from detforge.registry import PRIOR_GENERATORS

from .anchor_generator import STRIDE_RULES

__all__ = ['MlvlPointGenerator']


def _pair(s) -> tuple[int, int]:
    return (int(s[0]), int(s[1])) if isinstance(s, (tuple, list)) else (int(s), int(s))


@PRIOR_GENERATORS.register_module()
class MlvlPointGenerator:
    """One point per feature-map position, at ``((j + offset) * stride_w, (i + offset) *
    stride_h)`` in input pixels for row ``i``, column ``j`` (MMDetection 2.x: ``offset=0.5``
    puts the point at the centre of the stride cell, ``0`` at its top-left corner, which is
    where torchvision's FCOS anchors are centred).

    Args:
        strides: stride of each level, an int or a ``(w, h)`` pair each.
        offset: point offset in units of the stride.
        stride_rule: where a level's grid step comes from, as for :class:`AnchorGenerator`:
            ``'fixed'`` (MMDetection) the configured ``strides``; ``'batch_shape'``
            (torchvision's anchor generator) ``padded batch size // feature size`` per axis,
            integer division; :meth:`grid_priors` then needs ``batch_input_shape``. The two agree
            when the input is a multiple of the largest stride.
    """

    def __init__(self, strides: Sequence, offset: float = 0.5, stride_rule: str = 'fixed'):
        if stride_rule not in STRIDE_RULES:
            raise ValueError(f'stride_rule must be one of {STRIDE_RULES}, got {stride_rule!r}')
        self.strides = [_pair(s) for s in strides]
        self.offset = float(offset)
        self.stride_rule = stride_rule

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """One point per position on every level."""
        return [1] * self.num_levels

    def level_strides(self, featmap_sizes, batch_input_shape=None) -> list[tuple[int, int]]:
        """``(stride_w, stride_h)`` of each level, as used to place the points."""
        if self.stride_rule == 'fixed':
            return self.strides
        if batch_input_shape is None:
            raise ValueError("MlvlPointGenerator(stride_rule='batch_shape') needs the batch's padded (H, W): "
                             'pass batch_input_shape')
        h, w = int(batch_input_shape[0]), int(batch_input_shape[1])
        return [(w // int(fw), h // int(fh)) for fh, fw in featmap_sizes]

    def grid_priors(self, featmap_sizes, dtype=torch.float32, device='cpu', with_stride: bool = False,
                    batch_input_shape=None) -> list[Tensor]:
        """Points of every level.

        Args:
            featmap_sizes: ``(H_l, W_l)`` per level.
            with_stride: append the level's ``(stride_w, stride_h)`` to each point.
            batch_input_shape: ``(H, W)`` of the padded batch (``stride_rule='batch_shape'``).

        Returns:
            per level ``(H_l * W_l, 2)`` ``(x, y)`` points, row-major (``(.., 4)`` with stride).
        """
        strides = self.level_strides(featmap_sizes, batch_input_shape)
        return [self.single_level_grid_priors(tuple(size), strides[i], dtype, device, with_stride)
                for i, size in enumerate(featmap_sizes)]

    def single_level_grid_priors(self, featmap_size, stride, dtype=torch.float32, device='cpu',
                                 with_stride: bool = False) -> Tensor:
        """``(H * W, 2)`` points of one level with ``stride = (stride_w, stride_h)``."""
        feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
        stride_w, stride_h = stride
        # computed in float32 then cast, so that half-precision inputs get the same points
        xs = (torch.arange(feat_w, device=device, dtype=torch.float32) + self.offset) * stride_w
        ys = (torch.arange(feat_h, device=device, dtype=torch.float32) + self.offset) * stride_h
        yy, xx = torch.meshgrid(ys, xs, indexing='ij')
        points = [xx.reshape(-1), yy.reshape(-1)]
        if with_stride:
            points += [xx.new_full((feat_h * feat_w,), stride_w), xx.new_full((feat_h * feat_w,), stride_h)]
        return torch.stack(points, dim=-1).to(dtype)

    def valid_flags(self, featmap_sizes, pad_shape, device='cpu') -> list[Tensor]:
        """Per level ``(H_l * W_l,)`` bool: the point's cell lies inside ``pad_shape`` ``(h, w)``."""
        out = []
        for (feat_h, feat_w), (stride_w, stride_h) in zip(featmap_sizes, self.strides):
            valid_h = min(-(-int(pad_shape[0]) // stride_h), feat_h)
            valid_w = min(-(-int(pad_shape[1]) // stride_w), feat_w)
            vy = torch.arange(feat_h, device=device) < valid_h
            vx = torch.arange(feat_w, device=device) < valid_w
            out.append((vy[:, None] & vx[None, :]).reshape(-1))
        return out

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(strides={self.strides}, offset={self.offset}, '
                f'stride_rule={self.stride_rule!r})')
