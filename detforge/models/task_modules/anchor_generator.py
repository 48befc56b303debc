"""Anchor boxes on the grid of each feature level."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from detforge.registry import PRIOR_GENERATORS

__all__ = ['AnchorGenerator', 'padded_batch_shape']

STRIDE_RULES = ('fixed', 'batch_shape')


def _pair(x) -> tuple[int, int]:
    return (x, x) if isinstance(x, (int, float)) else (x[0], x[1])


@PRIOR_GENERATORS.register_module()
class AnchorGenerator:
    """Square-grid anchors, as in MMDetection 2.x.

    At level ``i`` (stride ``s_i``), each base anchor is centred on
    ``(x * s_i + offset_x, y * s_i + offset_y)`` for every feature position ``(x, y)``, and a base
    anchor of size ``base_size * scale`` and aspect ratio ``r = h / w`` has
    ``w = base_size * scale / sqrt(r)``, ``h = base_size * scale * sqrt(r)``. Anchors are listed
    position-major: index ``(y * W + x) * A + a``.

    Args:
        strides: stride of each level in pixels (an int or a ``(w, h)`` pair each).
        ratios: aspect ratios ``h / w``.
        scales: anchor scales relative to the base size (or use the octave arguments).
        base_sizes: base size of each level (default: its stride).
        scale_major: order the base anchors ratio-major (False: scale-major).
        octave_base_scale, scales_per_octave: ``scales = octave_base_scale * 2 ** (i / n)``,
            ``i = 0..n-1`` (RetinaNet's anchors).
        centers: explicit centre of the base anchors per level (default: from center_offset).
        center_offset: centre of the base anchors in units of the stride (0 = top-left corner of
            the cell, MMDetection 2.x; 0.5 = cell centre).
        sizes: explicit anchor sizes in pixels per level (list of lists), Detectron2's and
            torchvision's way; overrides scales/base_sizes.
        round_base_anchors: round the base anchors to whole pixels (torchvision does).
        stride_rule: where a level's grid step comes from. ``'fixed'`` (MMDetection,
            Detectron2): the configured ``strides``. ``'batch_shape'`` (torchvision's
            ``AnchorGenerator``): computed for every batch as ``padded batch height // feature
            height`` (and the same for widths), integer division, so that a 480 px high batch
            has a 60 px step on its 8-row P6 map where ``'fixed'`` has 64. The configured
            ``strides`` then only serve the base sizes and the valid flags. Needs the batch's
            padded ``(H, W)``: pass ``batch_input_shape`` to :meth:`grid_priors`.
    """

    def __init__(self, strides: Sequence, ratios: Sequence[float], scales: Sequence[float] | None = None,
                 base_sizes: Sequence[int] | None = None, scale_major: bool = True,
                 octave_base_scale: float | None = None, scales_per_octave: int | None = None,
                 centers: Sequence[tuple[float, float]] | None = None, center_offset: float = 0.,
                 sizes: Sequence[Sequence[float]] | None = None, round_base_anchors: bool = False,
                 stride_rule: str = 'fixed'):
        if stride_rule not in STRIDE_RULES:
            raise ValueError(f'stride_rule must be one of {STRIDE_RULES}, got {stride_rule!r}')
        if center_offset != 0 and centers is not None:
            raise ValueError('give either centers or center_offset, not both')
        if not 0 <= center_offset <= 1:
            raise ValueError(f'center_offset must be in [0, 1], got {center_offset}')
        self.strides = [_pair(s) for s in strides]
        self.base_sizes = list(base_sizes) if base_sizes is not None else [min(s) for s in self.strides]
        if len(self.base_sizes) != len(self.strides):
            raise ValueError(f'base_sizes has {len(self.base_sizes)} entries for {len(self.strides)} strides')
        if centers is not None and len(centers) != len(self.strides):
            raise ValueError(f'centers has {len(centers)} entries for {len(self.strides)} strides')
        self.sizes = None
        if sizes is not None:
            if len(sizes) != len(self.strides):
                raise ValueError(f'sizes has {len(sizes)} levels for {len(self.strides)} strides')
            self.sizes = [list(s) for s in sizes]
        elif scales is not None:
            if octave_base_scale is not None or scales_per_octave is not None:
                raise ValueError('give either scales or octave_base_scale + scales_per_octave, not both')
            self.scales = torch.tensor(scales, dtype=torch.float32)
        elif octave_base_scale is not None and scales_per_octave is not None:
            octave_scales = np.array([2 ** (i / scales_per_octave) for i in range(scales_per_octave)])
            self.scales = torch.tensor(octave_scales * octave_base_scale, dtype=torch.float32)
        else:
            raise ValueError('AnchorGenerator needs scales, sizes, or octave_base_scale and scales_per_octave')
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.ratios = torch.tensor(ratios, dtype=torch.float32)
        self.scale_major = scale_major
        self.centers = centers
        self.center_offset = center_offset
        self.round_base_anchors = round_base_anchors
        self.stride_rule = stride_rule
        self.base_anchors = self.gen_base_anchors()
        self._grid_cache: dict = {}

    # ------------------------------------------------------------------ base anchors
    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_anchors(self) -> list[int]:
        """Anchors per position at each level."""
        return [a.size(0) for a in self.base_anchors]

    num_base_priors = num_base_anchors

    def gen_base_anchors(self) -> list[Tensor]:
        anchors = []
        for i, base_size in enumerate(self.base_sizes):
            center = self.centers[i] if self.centers is not None else None
            if self.sizes is not None:
                anchors.append(self.gen_single_level_base_anchors(
                    1.0, torch.tensor(self.sizes[i], dtype=torch.float32), self.ratios, center))
            else:
                anchors.append(self.gen_single_level_base_anchors(base_size, self.scales, self.ratios, center))
        return anchors

    def gen_single_level_base_anchors(self, base_size: float, scales: Tensor, ratios: Tensor,
                                      center: tuple[float, float] | None = None) -> Tensor:
        """``(len(ratios) * len(scales), 4)`` anchors of one level centred on ``center``."""
        w = h = base_size
        if center is None:
            x_center, y_center = self.center_offset * w, self.center_offset * h
        else:
            x_center, y_center = center
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        if self.scale_major:
            ws = (w * w_ratios[:, None] * scales[None, :]).reshape(-1)
            hs = (h * h_ratios[:, None] * scales[None, :]).reshape(-1)
        else:
            ws = (w * scales[:, None] * w_ratios[None, :]).reshape(-1)
            hs = (h * scales[:, None] * h_ratios[None, :]).reshape(-1)
        half = torch.stack([-ws, -hs, ws, hs], dim=-1) / 2
        if self.round_base_anchors:
            half = half.round()
        return half + torch.tensor([x_center, y_center, x_center, y_center])

    # ------------------------------------------------------------------ grid anchors
    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]], dtype=torch.float32,
                    device='cpu', batch_input_shape: Sequence[int] | None = None) -> list[Tensor]:
        """Anchors of every level: a list of ``(H_i * W_i * A_i, 4)`` tensors (cached by size).

        ``batch_input_shape``: the padded ``(H, W)`` of the batch, needed by
        ``stride_rule='batch_shape'`` (ignored by ``'fixed'``)."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f'{len(featmap_sizes)} feature maps for {self.num_levels} anchor levels')
        strides = self.level_strides(featmap_sizes, batch_input_shape)
        return [self.single_level_grid_priors(tuple(featmap_sizes[i]), i, dtype, device, strides[i])
                for i in range(self.num_levels)]

    grid_anchors = grid_priors

    def level_strides(self, featmap_sizes: Sequence[tuple[int, int]],
                      batch_input_shape: Sequence[int] | None = None) -> list[tuple[int, int]]:
        """The ``(stride_w, stride_h)`` of every level under this generator's ``stride_rule``."""
        if self.stride_rule == 'fixed':
            return list(self.strides)
        if batch_input_shape is None:
            raise ValueError("stride_rule='batch_shape' needs the batch's padded (H, W): pass "
                             "batch_input_shape (the detectors put it in img_metas)")
        batch_h, batch_w = (int(v) for v in batch_input_shape[:2])
        # torchvision: image_size // grid_size, per dimension (anchor_utils.AnchorGenerator.forward)
        return [(batch_w // int(size[1]), batch_h // int(size[0])) for size in featmap_sizes]

    def single_level_grid_priors(self, featmap_size: tuple[int, int], level_idx: int,
                                 dtype=torch.float32, device='cpu',
                                 stride: tuple[int, int] | None = None) -> Tensor:
        """``(H * W * A, 4)`` anchors of one level; ``stride = (w, h)`` defaults to the
        configured one."""
        stride_w, stride_h = self.strides[level_idx] if stride is None else stride
        key = (tuple(int(s) for s in featmap_size), level_idx, (stride_w, stride_h), dtype, str(device))
        cached = self._grid_cache.get(key)
        if cached is not None:
            return cached
        feat_h, feat_w = key[0]
        base = self.base_anchors[level_idx].to(device=device, dtype=dtype)
        shift_x = torch.arange(0, feat_w, device=device, dtype=dtype) * stride_w
        shift_y = torch.arange(0, feat_h, device=device, dtype=dtype) * stride_h
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        anchors = (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)
        if len(self._grid_cache) > 64:  # many input sizes (multi-scale training): stay bounded
            self._grid_cache.clear()
        self._grid_cache[key] = anchors
        return anchors

    def valid_flags(self, featmap_sizes: Sequence[tuple[int, int]], pad_shape: Sequence[int],
                    device='cpu') -> list[Tensor]:
        """Per level, ``(H_i * W_i * A_i,)`` bool: True where the anchor's grid cell lies inside
        the image of ``pad_shape = (h, w, ...)`` (cells beyond it exist only because of the
        feature map's rounding up)."""
        flags = []
        for i in range(self.num_levels):
            stride_w, stride_h = self.strides[i]
            feat_h, feat_w = featmap_sizes[i][:2]
            h, w = pad_shape[:2]
            valid_h = min(int(np.ceil(h / stride_h)), feat_h)
            valid_w = min(int(np.ceil(w / stride_w)), feat_w)
            flags.append(self.single_level_valid_flags((feat_h, feat_w), (valid_h, valid_w),
                                                       self.num_base_anchors[i], device))
        return flags

    @staticmethod
    def single_level_valid_flags(featmap_size, valid_size, num_base_anchors: int, device='cpu') -> Tensor:
        feat_h, feat_w = featmap_size
        valid_h, valid_w = valid_size
        valid_x = torch.arange(feat_w, device=device) < valid_w
        valid_y = torch.arange(feat_h, device=device) < valid_h
        valid = (valid_y[:, None] & valid_x[None, :]).reshape(-1)
        return valid[:, None].expand(-1, num_base_anchors).reshape(-1)

    def __repr__(self) -> str:
        scales = f'sizes={self.sizes}' if self.sizes is not None else f'scales={self.scales.tolist()}'
        return (f'{type(self).__name__}(strides={self.strides}, ratios={self.ratios.tolist()}, {scales}, '
                f'base_sizes={self.base_sizes}, center_offset={self.center_offset}, '
                f'stride_rule={self.stride_rule!r})')


def padded_batch_shape(img_metas: Sequence[dict]) -> tuple[int, int] | None:
    """The padded ``(H, W)`` of a batch from its metas: ``batch_input_shape`` (set by collate and
    the detectors), else the largest ``pad_shape`` (collate pads every image to the batch's
    shape), else None."""
    if not img_metas:
        return None
    shape = img_metas[0].get('batch_input_shape')
    if shape is not None:
        return int(shape[0]), int(shape[1])
    pads = [m.get('pad_shape') for m in img_metas]
    if any(p is None for p in pads):
        return None
    return max(int(p[0]) for p in pads), max(int(p[1]) for p in pads)
