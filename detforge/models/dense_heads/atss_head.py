"""ATSS's head (Zhang et al., CVPR 2020): RetinaNet-like towers with one anchor per position,
positives chosen by :class:`ATSSAssigner`, GIoU loss weighted by centerness, and a centerness
branch whose sigmoid multiplies the class scores at inference."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detforge.registry import BBOX_CODERS, HEADS, LOSSES, BuildError

from .conv_tower_head import Scale, _build
from .fcos_head import _flatten
from .single_anchor_head import SingleAnchorHead

__all__ = ['ATSSHead', 'anchor_centerness']


def anchor_centerness(anchors: Tensor, gt_bboxes: Tensor) -> Tensor:
    """``(n,)`` FCOS centerness of each anchor's centre inside its matched box ``(n, 4)``."""
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    lr = torch.stack([cx - gt_bboxes[:, 0], gt_bboxes[:, 2] - cx], dim=1)
    tb = torch.stack([cy - gt_bboxes[:, 1], gt_bboxes[:, 3] - cy], dim=1)
    return torch.sqrt(lr.min(dim=1).values / lr.max(dim=1).values * (tb.min(dim=1).values / tb.max(dim=1).values))


@HEADS.register_module()
class ATSSHead(SingleAnchorHead):
    """ATSS: per anchor, class logits, ``DeltaXYWH`` deltas (scaled per level) and a centerness
    logit. Parameter names are MMDetection 2.x's (``atss_cls``, ``atss_reg``,
    ``atss_centerness``, ``scales``).

    Args:
        num_classes, in_channels, feat_channels, stacked_convs, conv_cfg, norm_cfg, conv_bias:
            see :class:`ConvTowerHead` (default norm: GroupNorm, 32 groups).
        pred_kernel_size: kernel of the prediction convs.
        anchor_generator: one anchor per position (default: 8 x stride, strides 8..128).
        bbox_coder: ``DeltaXYWHBBoxCoder`` (default stds 0.1, 0.1, 0.2, 0.2).
        reg_decoded_bbox: must be True (the box loss compares decoded boxes).
        loss_cls, loss_bbox, loss_centerness: focal, GIoU (weight 2), binary cross-entropy.
        train_cfg: ``assigner`` (``ATSSAssigner``), ``allowed_border``, ``pos_weight``.
        test_cfg: ``nms_pre``, ``score_thr``, ``nms``, ``max_per_img``.
    """

    def __init__(self, num_classes: int, in_channels: int, pred_kernel_size: int = 3, stacked_convs: int = 4,
                 feat_channels: int = 256, conv_cfg=None,
                 norm_cfg: dict | None = dict(type='GN', num_groups=32, requires_grad=True), conv_bias='auto',
                 reg_decoded_bbox: bool = True,
                 anchor_generator: dict = dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                                               scales_per_octave=1, strides=[8, 16, 32, 64, 128]),
                 bbox_coder: dict = dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                                         target_stds=[0.1, 0.1, 0.2, 0.2]),
                 loss_cls: dict = dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                 loss_bbox: dict = dict(type='GIoULoss', loss_weight=2.0),
                 loss_centerness: dict = dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 train_cfg=None, test_cfg=None, init_cfg=None):
        super().__init__(num_classes, in_channels, anchor_generator, train_cfg=train_cfg,
                         feat_channels=feat_channels, stacked_convs=stacked_convs, conv_cfg=conv_cfg,
                         norm_cfg=norm_cfg, conv_bias=conv_bias, test_cfg=test_cfg, init_cfg=init_cfg)
        if not reg_decoded_bbox:
            raise BuildError('ATSSHead compares decoded boxes (GIoU): reg_decoded_bbox must be True',
                             key_path=['reg_decoded_bbox'])
        if not loss_cls.get('use_sigmoid', True):
            raise BuildError('ATSSHead classifies with sigmoids: loss_cls needs use_sigmoid=True',
                             key_path=['loss_cls', 'use_sigmoid'])
        self.reg_decoded_bbox = reg_decoded_bbox
        self.bbox_coder = _build(BBOX_CODERS, bbox_coder, 'bbox_coder')
        self.loss_cls = _build(LOSSES, loss_cls, 'loss_cls')
        self.loss_bbox = _build(LOSSES, loss_bbox, 'loss_bbox')
        self.loss_centerness = _build(LOSSES, loss_centerness, 'loss_centerness')
        pad = pred_kernel_size // 2
        self.atss_cls = nn.Conv2d(feat_channels, self.cls_out_channels, pred_kernel_size, padding=pad)
        self.atss_reg = nn.Conv2d(feat_channels, 4, pred_kernel_size, padding=pad)
        self.atss_centerness = nn.Conv2d(feat_channels, 1, pred_kernel_size, padding=pad)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self._init_weights(self.atss_cls)

    def forward_single(self, x: Tensor, level: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, C, H, W)`` → logits ``(B, num_classes, H, W)``, deltas ``(B, 4, H, W)``,
        centerness logits ``(B, 1, H, W)``."""
        cls_feat, reg_feat = self.tower_features(x)
        bbox_pred = self.scales[level](self.atss_reg(reg_feat)).float()
        return self.atss_cls(cls_feat), bbox_pred, self.atss_centerness(reg_feat)

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], centernesses: list[Tensor],
             gt_bboxes: list[Tensor], gt_labels: list[Tensor], img_metas: list[dict],
             gt_bboxes_ignore=None) -> dict:
        """``loss_cls`` over the non-ignored anchors and ``loss_centerness`` over the positives,
        each divided by the number of positives; ``loss_bbox`` (GIoU of the decoded positives
        weighted by their centerness targets) divided by the sum of those targets."""
        cls_scores = [s.float() for s in cls_scores]
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        device = cls_scores[0].device
        mlvl_anchors = self.mlvl_priors(featmap_sizes, img_metas, device)
        with torch.no_grad():
            t = self.get_targets(mlvl_anchors, self.valid_flags(featmap_sizes, img_metas, device), gt_bboxes,
                                 gt_labels, gt_bboxes_ignore)
        cls_score = _flatten(cls_scores).reshape(-1, self.cls_out_channels)
        bbox_pred = _flatten([b.float() for b in bbox_preds])
        centerness = _flatten([c.float() for c in centernesses])[..., 0]
        num_pos = max(t.num_pos, 1.0)
        loss_cls = self.loss_cls(cls_score, t.labels.reshape(-1), t.label_weights.reshape(-1), avg_factor=num_pos)
        anchors = torch.cat(mlvl_anchors)[None].expand(t.pos.size(0), -1, -1)
        pos_anchors, pos_targets = anchors[t.pos], t.bbox_targets[t.pos]
        if pos_targets.numel() == 0:
            return dict(loss_cls=loss_cls, loss_bbox=bbox_pred.sum() * 0, loss_centerness=centerness.sum() * 0)
        centerness_targets = anchor_centerness(pos_anchors, pos_targets)
        decoded = self.bbox_coder.decode(pos_anchors, bbox_pred[t.pos])
        loss_bbox = self.loss_bbox(decoded, pos_targets, weight=centerness_targets, avg_factor=1.0) \
            / centerness_targets.sum().clamp(min=1)
        loss_centerness = self.loss_centerness(centerness[t.pos], centerness_targets, avg_factor=num_pos)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_centerness=loss_centerness)

    def decode_level(self, priors: Tensor, bbox_pred: Tensor, level: int, max_shape) -> Tensor:
        """Anchors ``(n, 4)`` and deltas ``(n, 4)`` → boxes ``(n, 4)``."""
        return self.bbox_coder.decode(priors, bbox_pred, max_shape=max_shape)
