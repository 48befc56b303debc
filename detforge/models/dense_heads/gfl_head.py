"""GFL's head (Li et al., "Generalized Focal Loss", NeurIPS 2020): each box side is a discrete
distribution over ``0..reg_max`` stride units whose expectation (``Integral``) is the
distance; the class score is trained to be the IoU of the predicted box (quality focal loss)
and the distributions to peak around the true distance (distribution focal loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detforge.registry import BBOX_CODERS, HEADS, LOSSES
from detforge.structures import bbox_overlaps

from .conv_tower_head import Scale, _build
from .fcos_head import _flatten
from .single_anchor_head import SingleAnchorHead

__all__ = ['GFLHead', 'Integral']


class Integral(nn.Module):
    """The expectation of a distribution over the bins ``0, 1, ..., reg_max``.

    ``(..., 4 * (reg_max + 1))`` logits → softmax over each side's bins → ``(n, 4)`` expected
    distances (in bins). The buffer ``project`` (the bins' values) is saved in checkpoints, as
    MMDetection's.
    """

    def __init__(self, reg_max: int = 16):
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer('project', torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, x: Tensor) -> Tensor:
        probs = F.softmax(x.reshape(-1, self.reg_max + 1), dim=1)
        return F.linear(probs, self.project.type_as(probs)).reshape(-1, 4)


@HEADS.register_module()
class GFLHead(SingleAnchorHead):
    """GFL: per anchor, class-quality logits and four side distributions (scaled per level).
    Parameter names are MMDetection 2.x's (``gfl_cls``, ``gfl_reg``, ``scales``,
    ``integral.project``).

    Args:
        num_classes, in_channels, feat_channels, stacked_convs, conv_cfg, norm_cfg, conv_bias:
            see :class:`ConvTowerHead` (default norm: GroupNorm, 32 groups).
        anchor_generator: one anchor per position; its centre is the point the distances are
            measured from.
        reg_max: the largest distance, in strides (``reg_max + 1`` bins per side).
        bbox_coder: ``DistancePointBBoxCoder``.
        loss_cls: ``QualityFocalLoss``; loss_bbox: GIoU (weight 2); loss_dfl:
            ``DistributionFocalLoss`` (weight 0.25).
        reg_decoded_bbox: accepted for AnchorHead-style configs; GFL always decodes.
        train_cfg: ``assigner`` (``ATSSAssigner``), ``allowed_border``, ``pos_weight``.
        test_cfg: ``nms_pre``, ``score_thr``, ``nms``, ``max_per_img``.
    """

    def __init__(self, num_classes: int, in_channels: int, stacked_convs: int = 4, feat_channels: int = 256,
                 conv_cfg=None, norm_cfg: dict | None = dict(type='GN', num_groups=32, requires_grad=True),
                 conv_bias='auto', reg_max: int = 16,
                 anchor_generator: dict = dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                                               scales_per_octave=1, strides=[8, 16, 32, 64, 128]),
                 bbox_coder: dict = dict(type='DistancePointBBoxCoder'),
                 loss_cls: dict = dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
                 loss_bbox: dict = dict(type='GIoULoss', loss_weight=2.0),
                 loss_dfl: dict = dict(type='DistributionFocalLoss', loss_weight=0.25),
                 reg_decoded_bbox: bool = False, train_cfg=None, test_cfg=None, init_cfg=None):
        super().__init__(num_classes, in_channels, anchor_generator, train_cfg=train_cfg,
                         feat_channels=feat_channels, stacked_convs=stacked_convs, conv_cfg=conv_cfg,
                         norm_cfg=norm_cfg, conv_bias=conv_bias, test_cfg=test_cfg, init_cfg=init_cfg)
        self.reg_max = reg_max
        self.bbox_coder = _build(BBOX_CODERS, bbox_coder, 'bbox_coder')
        self.loss_cls = _build(LOSSES, loss_cls, 'loss_cls')
        self.loss_bbox = _build(LOSSES, loss_bbox, 'loss_bbox')
        self.loss_dfl = _build(LOSSES, loss_dfl, 'loss_dfl')
        self.integral = Integral(reg_max)
        self.gfl_cls = nn.Conv2d(feat_channels, self.cls_out_channels, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat_channels, 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self._init_weights(self.gfl_cls)

    def forward_single(self, x: Tensor, level: int) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` → class-quality logits ``(B, num_classes, H, W)`` and side
        distributions ``(B, 4 * (reg_max + 1), H, W)`` (logits)."""
        cls_feat, reg_feat = self.tower_features(x)
        return self.gfl_cls(cls_feat), self.scales[level](self.gfl_reg(reg_feat)).float()

    @staticmethod
    def anchor_center(anchors: Tensor) -> Tensor:
        """``(n, 4)`` anchors → ``(n, 2)`` centres."""
        return (anchors[:, :2] + anchors[:, 2:]) / 2

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], gt_bboxes: list[Tensor],
             gt_labels: list[Tensor], img_metas: list[dict], gt_bboxes_ignore=None) -> dict:
        """``loss_cls`` (QFL against the IoU of each positive's predicted box, over the
        non-ignored anchors, divided by the number of positives); ``loss_bbox`` (GIoU) and
        ``loss_dfl`` (DFL, averaged over the 4 sides) over the positives, weighted by their
        best class score and divided by the sum of those weights. Distances are in strides."""
        cls_scores = [s.float() for s in cls_scores]
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        device = cls_scores[0].device
        mlvl_anchors = self.mlvl_priors(featmap_sizes, img_metas, device)
        with torch.no_grad():
            t = self.get_targets(mlvl_anchors, self.valid_flags(featmap_sizes, img_metas, device), gt_bboxes,
                                 gt_labels, gt_bboxes_ignore)
        B = t.pos.size(0)
        cls_score = _flatten(cls_scores)  # (B, N, C)
        bbox_pred = _flatten([b.float() for b in bbox_preds])  # (B, N, 4 * (reg_max + 1))
        anchors = torch.cat(mlvl_anchors)[None].expand(B, -1, -1)
        strides = self.prior_strides(mlvl_anchors)[None].expand(B, -1)
        num_pos = max(t.num_pos, 1.0)

        quality = cls_score.new_zeros(t.labels.shape)  # IoU target of the labelled class
        pos = t.pos
        if pos.any():
            pos_strides = strides[pos][:, None]
            centres = self.anchor_center(anchors[pos]) / pos_strides
            weight = cls_score.detach().sigmoid().max(dim=-1).values[pos]
            pos_pred = bbox_pred[pos]
            pred_boxes = self.bbox_coder.decode(centres, self.integral(pos_pred))
            target_boxes = t.bbox_targets[pos] / pos_strides
            quality[pos] = bbox_overlaps(pred_boxes.detach(), target_boxes, is_aligned=True)
            weight_sum = weight.sum().clamp(min=1)
            loss_bbox = self.loss_bbox(pred_boxes, target_boxes, weight=weight, avg_factor=1.0) / weight_sum
            target_dist = self.bbox_coder.encode(centres, target_boxes, self.reg_max).reshape(-1)
            loss_dfl = self.loss_dfl(pos_pred.reshape(-1, self.reg_max + 1), target_dist,
                                     weight=weight[:, None].expand(-1, 4).reshape(-1), avg_factor=4.0) / weight_sum
        else:
            loss_bbox = loss_dfl = bbox_pred.sum() * 0
        loss_cls = self.loss_cls(cls_score.reshape(-1, self.cls_out_channels),
                                 (t.labels.reshape(-1), quality.reshape(-1)), weight=t.label_weights.reshape(-1),
                                 avg_factor=num_pos)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_dfl=loss_dfl)

    def decode_level(self, priors: Tensor, bbox_pred: Tensor, level: int, max_shape) -> Tensor:
        """Anchors ``(n, 4)`` and side distributions ``(n, 4 * (reg_max + 1))`` → boxes: the
        expected distances times the level's stride, from the anchors' centres."""
        distances = self.integral(bbox_pred) * self.strides[level]
        return self.bbox_coder.decode(self.anchor_center(priors), distances, max_shape=max_shape)
