"""RoI feature extractors: pool a fixed-size feature map for every box from one FPN level."""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import roi_align

from detforge.registry import ROI_EXTRACTORS, BuildError

__all__ = ['RoIAlign', 'SingleRoIExtractor']


class RoIAlign(nn.Module):
    """``torchvision.ops.roi_align`` with MMCV's argument names.

    Args:
        output_size: side of the pooled map (int or (h, w)).
        spatial_scale: feature pixels per image pixel (1 / stride).
        sampling_ratio: sampling points per bin side; 0 = adaptive (ceil(roi_size / bin)).
        aligned: shift boxes by -0.5 px (pixel-centre convention). MMDetection 2.x uses True,
            torchvision's detectors False.
    """

    def __init__(self, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                 aligned: bool = True, pool_mode: str = 'avg', use_torchvision: bool = True):
        super().__init__()
        if pool_mode != 'avg':
            raise BuildError(f"RoIAlign supports pool_mode='avg' only, got {pool_mode!r}")
        self.output_size = (output_size, output_size) if isinstance(output_size, int) \
            else tuple(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, feats: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """feats (B, C, H, W), rois (n, 5) [batch_idx, x1, y1, x2, y2] -> (n, C, *output_size)."""
        return roi_align(feats, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f'output_size={self.output_size}, spatial_scale={self.spatial_scale}, '
                f'sampling_ratio={self.sampling_ratio}, aligned={self.aligned}')


_ROI_LAYERS = {'RoIAlign': RoIAlign}


@ROI_EXTRACTORS.register_module()
class SingleRoIExtractor(nn.Module):
    """Pool each RoI from the one FPN level that suits its size (FPN paper, eq. 1).

    A box of scale ``s = sqrt(w * h)`` goes to level
    ``floor(log2(s / finest_scale + 1e-6))`` clamped to ``[0, num_levels - 1]`` (MMDetection
    2.x): with ``finest_scale=56`` boxes under 112 px go to stride 4, under 224 px to stride 8,
    and so on. ``level_mapping='torchvision'`` uses torchvision's ``MultiScaleRoIAlign``
    rounding ``floor(log2(s / finest_scale) + 1e-6)`` (canonical scale 224 at level 4 is
    ``finest_scale=56`` at the stride-4 level); ``'detectron2'`` Detectron2's ``ROIPooler``
    rule ``floor(2 + log2(s / (4 * finest_scale) + 1e-8))`` (canonical box 224 px at level 4,
    the finest level being 2). The three differ only for boxes within a hair of a level
    boundary.

    Args:
        roi_layer: ``dict(type='RoIAlign', output_size=7, sampling_ratio=0, aligned=True)``.
        out_channels: channels of the input features (and of the output).
        featmap_strides: stride of each input level, finest first, e.g. ``[4, 8, 16, 32]``.
        finest_scale: box scale (px) that maps to the boundary of level 0 and 1 halves.
        roi_scale_factor: enlarge every box about its centre by this factor before pooling.
        level_mapping: ``'mmdet'``, ``'torchvision'`` or ``'detectron2'`` (see above).
    """

    def __init__(self, roi_layer: dict, out_channels: int, featmap_strides,
                 finest_scale: float = 56, roi_scale_factor: float | None = None,
                 level_mapping: str = 'mmdet', init_cfg=None):
        super().__init__()
        cfg = dict(roi_layer)
        layer_type = cfg.pop('type', 'RoIAlign')
        if layer_type not in _ROI_LAYERS:
            raise BuildError(f'roi_layer type {layer_type!r} is not supported; expected one of '
                             f'{sorted(_ROI_LAYERS)}', roi_layer, key_path=['roi_layer'])
        if level_mapping not in ('mmdet', 'torchvision', 'detectron2'):
            raise BuildError(f"level_mapping must be 'mmdet', 'torchvision' or 'detectron2', got "
                             f'{level_mapping!r}', level_mapping, key_path=['level_mapping'])
        self.featmap_strides = list(featmap_strides)
        self.roi_layers = nn.ModuleList(
            _ROI_LAYERS[layer_type](spatial_scale=1.0 / s, **cfg) for s in self.featmap_strides)
        self.out_channels = out_channels
        self.finest_scale = float(finest_scale)
        self.roi_scale_factor = roi_scale_factor
        self.level_mapping = level_mapping
        self.output_size = self.roi_layers[0].output_size

    @property
    def num_inputs(self) -> int:
        return len(self.featmap_strides)

    def map_roi_levels(self, rois: torch.Tensor, num_levels: int) -> torch.Tensor:
        """rois (n, 5) -> level index (n,) long in ``[0, num_levels - 1]``."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        if self.level_mapping == 'mmdet':
            lvls = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        elif self.level_mapping == 'detectron2':
            lvls = torch.floor(2 + torch.log2(scale / (4 * self.finest_scale) + 1e-8))
        else:
            lvls = torch.floor(torch.log2(scale / self.finest_scale) + 1e-6)
        return lvls.clamp(min=0, max=num_levels - 1).long()

    @staticmethod
    def roi_rescale(rois: torch.Tensor, scale_factor: float) -> torch.Tensor:
        """Scale each box (n, 5) about its centre by ``scale_factor``."""
        cx = (rois[:, 1] + rois[:, 3]) * 0.5
        cy = (rois[:, 2] + rois[:, 4]) * 0.5
        half_w = (rois[:, 3] - rois[:, 1]) * (0.5 * scale_factor)
        half_h = (rois[:, 4] - rois[:, 2]) * (0.5 * scale_factor)
        return torch.stack([rois[:, 0], cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1)

    def forward(self, feats, rois: torch.Tensor) -> torch.Tensor:
        """feats: per level (B, C, H_l, W_l); rois (n, 5) in image px -> (n, C, out_h, out_w)."""
        feats = feats[:self.num_inputs]
        out = feats[0].new_zeros(rois.size(0), self.out_channels, *self.output_size)
        if rois.size(0) == 0:
            return out
        if len(feats) == 1:
            return self.roi_layers[0](feats[0], rois)
        target_lvls = self.map_roi_levels(rois, len(feats))
        if self.roi_scale_factor is not None:
            rois = self.roi_rescale(rois, self.roi_scale_factor)
        for level, (feat, layer) in enumerate(zip(feats, self.roi_layers)):
            inds = torch.nonzero(target_lvls == level, as_tuple=True)[0]
            if inds.numel() > 0:
                out[inds] = layer(feat, rois[inds]).to(out.dtype)
            elif self.training:
                # keep every level in the autograd graph (DDP expects all parameters used)
                out = out + 0. * feat.sum()
        return out
