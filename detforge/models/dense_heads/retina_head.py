"""RetinaNet's head (Lin et al., "Focal Loss for Dense Object Detection")."""
from __future__ import annotations

import math

from torch import Tensor, nn

from detforge.registry import HEADS
from detforge.models.layers import ConvModule

from .anchor_head import AnchorHead

__all__ = ['RetinaHead']


@HEADS.register_module()
class RetinaHead(AnchorHead):
    """Two towers of ``stacked_convs`` 3x3 convs (classification, regression), then a 3x3 conv
    predicting ``A * num_classes`` logits and one predicting ``A * 4`` deltas per position.

    The classification bias starts at ``-log((1 - p) / p)`` with ``p = prior_prob`` (0.01), so
    every anchor starts as background with probability 0.99 and the focal loss does not blow up
    in the first iterations.

    Args:
        num_classes, in_channels: see :class:`AnchorHead`.
        stacked_convs: convs in each tower.
        feat_channels: channels of the tower convs.
        conv_cfg, norm_cfg: conv and norm of the towers (e.g. ``norm_cfg=dict(type='GN',
            num_groups=32)``).
        prior_prob: initial foreground probability.
        anchor_generator: default: 3 scales per octave from 4x the stride, ratios 0.5/1/2,
            strides 8..128 (9 anchors per position).
        **kwargs: the rest of :class:`AnchorHead`'s arguments (losses, coder, train/test cfg).
    """

    def __init__(self, num_classes: int, in_channels: int, stacked_convs: int = 4, conv_cfg=None,
                 norm_cfg: dict | None = None, prior_prob: float = 0.01,
                 anchor_generator: dict = dict(type='AnchorGenerator', octave_base_scale=4,
                                               scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                               strides=[8, 16, 32, 64, 128]),
                 loss_cls: dict = dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                                       loss_weight=1.0),
                 loss_bbox: dict = dict(type='L1Loss', loss_weight=1.0),
                 init_cfg=None, **kwargs):
        self.stacked_convs = stacked_convs
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.prior_prob = prior_prob
        super().__init__(num_classes, in_channels, anchor_generator=anchor_generator, loss_cls=loss_cls,
                         loss_bbox=loss_bbox, init_cfg=init_cfg, **kwargs)

    def _init_layers(self) -> None:
        self.relu = nn.ReLU(inplace=True)
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(self.stacked_convs):
            chn = self.in_channels if i == 0 else self.feat_channels
            self.cls_convs.append(ConvModule(chn, self.feat_channels, 3, padding=1, conv_cfg=self.conv_cfg,
                                             norm_cfg=self.norm_cfg))
            self.reg_convs.append(ConvModule(chn, self.feat_channels, 3, padding=1, conv_cfg=self.conv_cfg,
                                             norm_cfg=self.norm_cfg))
        self.retina_cls = nn.Conv2d(self.feat_channels, self.num_anchors * self.cls_out_channels, 3, padding=1)
        self.retina_reg = nn.Conv2d(self.feat_channels, self.num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.retina_cls.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` → logits ``(B, A * num_classes, H, W)``, deltas ``(B, A * 4, H, W)``."""
        cls_feat = x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        reg_feat = x
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)
