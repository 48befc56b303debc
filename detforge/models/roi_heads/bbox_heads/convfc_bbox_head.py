"""ConvFCBBoxHead: shared convs and fcs, then separate cls / reg branches, then predictors.

::

                                /-> cls convs -> cls fcs -> fc_cls
    RoI feat -> shared convs -> shared fcs
                                \\-> reg convs -> reg fcs -> fc_reg
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detforge.registry import HEADS, BuildError

from .bbox_head import BBoxHead

__all__ = ['ConvFCBBoxHead', 'Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead']


class _ConvNormAct(nn.Sequential):
    """3x3 conv (+ norm) + ReLU, named ``conv`` / ``norm`` as MMCV's ConvModule."""

    def __init__(self, in_channels, out_channels, norm_cfg=None):
        super().__init__()
        self.add_module('conv', nn.Conv2d(in_channels, out_channels, 3, padding=1,
                                          bias=norm_cfg is None))
        if norm_cfg is not None:
            from detforge.models.layers import build_norm_layer
            self.add_module('norm', build_norm_layer(norm_cfg, out_channels)[1])
        self.add_module('activate', nn.ReLU(inplace=True))


@HEADS.register_module()
class ConvFCBBoxHead(BBoxHead):
    """Box head with ``num_shared_convs`` 3x3 convs and ``num_shared_fcs`` fcs (ReLU after
    each), then per-branch convs/fcs; see the module docstring.

    Args:
        num_shared_convs, num_shared_fcs, num_cls_convs, num_cls_fcs, num_reg_convs,
        num_reg_fcs: layer counts.
        conv_out_channels: channels of every conv; fc_out_channels: width of every fc.
        norm_cfg: norm after each conv (e.g. ``dict(type='GN', num_groups=32)``), or None.
        Other arguments: see :class:`BBoxHead`.
    """

    def __init__(self, num_shared_convs=0, num_shared_fcs=0, num_cls_convs=0, num_cls_fcs=0,
                 num_reg_convs=0, num_reg_fcs=0, conv_out_channels=256, fc_out_channels=1024,
                 conv_cfg=None, norm_cfg=None, init_cfg=None, **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_shared_convs + num_shared_fcs + num_cls_convs + num_cls_fcs + num_reg_convs \
                + num_reg_fcs <= 0:
            raise BuildError('ConvFCBBoxHead needs at least one conv or fc layer')
        if (num_cls_convs > 0 or num_reg_convs > 0) and num_shared_fcs != 0:
            raise BuildError('ConvFCBBoxHead: branch convs cannot follow shared fcs '
                             '(num_shared_fcs must be 0 when num_cls_convs/num_reg_convs > 0)')
        self.num_shared_convs, self.num_shared_fcs = num_shared_convs, num_shared_fcs
        self.num_cls_convs, self.num_cls_fcs = num_cls_convs, num_cls_fcs
        self.num_reg_convs, self.num_reg_fcs = num_reg_convs, num_reg_fcs
        self.conv_out_channels, self.fc_out_channels = conv_out_channels, fc_out_channels
        self.norm_cfg = norm_cfg

        self.shared_convs, self.shared_fcs, last_dim = self._add_branch(
            num_shared_convs, num_shared_fcs, self.in_channels, is_shared=True)
        self.shared_out_channels = last_dim
        self.cls_convs, self.cls_fcs, cls_dim = self._add_branch(
            num_cls_convs, num_cls_fcs, last_dim)
        self.reg_convs, self.reg_fcs, reg_dim = self._add_branch(
            num_reg_convs, num_reg_fcs, last_dim)
        if self.num_shared_fcs == 0 and not self.with_avg_pool:
            if num_cls_fcs == 0:
                cls_dim *= self.roi_feat_area
            if num_reg_fcs == 0:
                reg_dim *= self.roi_feat_area
        if self.with_cls:
            self.fc_cls = nn.Linear(cls_dim, self.cls_out_channels)
        if self.with_reg:
            self.fc_reg = nn.Linear(reg_dim, 4 if self.reg_class_agnostic else
                                    4 * self.num_classes)
        self.init_weights()

    def _add_branch(self, num_convs, num_fcs, in_channels, is_shared=False):
        """convs (ModuleList), fcs (ModuleList), output width of the branch."""
        convs = nn.ModuleList()
        last = in_channels
        for i in range(num_convs):
            convs.append(_ConvNormAct(last, self.conv_out_channels, self.norm_cfg))
            last = self.conv_out_channels
        fcs = nn.ModuleList()
        if num_fcs > 0:
            # the first fc of a branch sees the flattened map, unless the shared part
            # already flattened it
            if (is_shared or self.num_shared_fcs == 0) and not self.with_avg_pool:
                last *= self.roi_feat_area
            for i in range(num_fcs):
                fcs.append(nn.Linear(last if i == 0 else self.fc_out_channels,
                                     self.fc_out_channels))
            last = self.fc_out_channels
        return convs, fcs, last

    def init_weights(self) -> None:
        super().init_weights()
        for fcs in (self.shared_fcs, self.cls_fcs, self.reg_fcs):
            for fc in fcs:
                nn.init.xavier_uniform_(fc.weight)
                nn.init.zeros_(fc.bias)

    @staticmethod
    def _run_branch(x, convs, fcs, with_avg_pool):
        for conv in convs:
            x = conv(x)
        if len(fcs) > 0:
            if x.dim() > 2:
                if with_avg_pool:
                    x = F.adaptive_avg_pool2d(x, 1)
                x = x.flatten(1)
            for fc in fcs:
                x = F.relu(fc(x), inplace=True)
        return x

    def forward(self, x: torch.Tensor):
        """x (n, C, 7, 7) -> cls_score (n, num_classes + 1), bbox_pred (n, 4 or 4 * C)."""
        x = self._run_branch(x, self.shared_convs, self.shared_fcs, self.with_avg_pool)
        x_cls = self._run_branch(x, self.cls_convs, self.cls_fcs, self.with_avg_pool)
        x_reg = self._run_branch(x, self.reg_convs, self.reg_fcs, self.with_avg_pool)
        cls_score = self.fc_cls(x_cls.flatten(1)) if self.with_cls else None
        bbox_pred = self.fc_reg(x_reg.flatten(1)) if self.with_reg else None
        return cls_score, bbox_pred


@HEADS.register_module()
class Shared2FCBBoxHead(ConvFCBBoxHead):
    """Two shared fcs (1024 wide) then the predictors: Faster R-CNN's box head
    (torchvision's ``TwoMLPHead`` + ``FastRCNNPredictor``)."""

    def __init__(self, fc_out_channels=1024, *args, **kwargs):
        super().__init__(num_shared_convs=0, num_shared_fcs=2, num_cls_convs=0, num_cls_fcs=0,
                         num_reg_convs=0, num_reg_fcs=0, fc_out_channels=fc_out_channels,
                         *args, **kwargs)


@HEADS.register_module()
class Shared4Conv1FCBBoxHead(ConvFCBBoxHead):
    """Four shared 3x3 convs and one shared fc (the GN box head of MMDetection)."""

    def __init__(self, fc_out_channels=1024, *args, **kwargs):
        super().__init__(num_shared_convs=4, num_shared_fcs=1, num_cls_convs=0, num_cls_fcs=0,
                         num_reg_convs=0, num_reg_fcs=0, fc_out_channels=fc_out_channels,
                         *args, **kwargs)
