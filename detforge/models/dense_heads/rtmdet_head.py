"""RTMDet's head (Lyu et al., 2022), the ``RTMDetSepBNHead`` of MMDetection 3.x: towers whose
convs are shared by all levels but whose batch norms are not, points as priors, distances
predicted in strides, dynamic soft label assignment, quality focal loss weighted by IoU.

Training reads as the algorithm:

    points (x, y, stride) ─► every prediction decoded to a box ─► per image, assign with the
    predictions' own costs (DynamicSoftLabelAssigner) ─► QFL against the IoU of each positive
    (over all points) and GIoU of the positives weighted by that IoU, both divided by the sum
    of the IoUs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detforge.models.layers import ConvModule
from detforge.registry import BBOX_CODERS, HEADS, LOSSES, PRIOR_GENERATORS, BuildError

from .conv_tower_head import ConvTowerHead, _build
from .fcos_head import _flatten

__all__ = ['RTMDetSepBNHead']


@HEADS.register_module()
class RTMDetSepBNHead(ConvTowerHead):
    """Per level, class logits and ``(l, t, r, b)`` distances (pixels at the output).
    Parameter names are MMDetection 3.x's (``cls_convs.{level}.{i}``, ``rtm_cls.{level}``,
    ``rtm_reg.{level}``).

    Args:
        num_classes, in_channels, feat_channels, stacked_convs: see :class:`ConvTowerHead`.
        share_conv: the tower convs' weights are shared by all levels (their norms are not).
        pred_kernel_size: kernel of the prediction convs.
        exp_on_reg: distances are ``exp(output) * stride`` instead of ``output * stride``.
        with_objectness: not supported (RTMDet's configs leave it False).
        norm_cfg, act_cfg: of the tower convs (default BN momentum 0.03, eps 0.001; SiLU).
        anchor_generator: the points (``MlvlPointGenerator``, offset 0, strides 8, 16, 32).
        bbox_coder: ``DistancePointBBoxCoder``.
        loss_cls: ``QualityFocalLoss``; loss_bbox: ``GIoULoss`` (weight 2).
        train_cfg: ``assigner`` (``DynamicSoftLabelAssigner``), ``allowed_border``, ``pos_weight``.
        test_cfg: ``nms_pre``, ``score_thr``, ``nms``, ``max_per_img``.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 256, stacked_convs: int = 2,
                 share_conv: bool = True, pred_kernel_size: int = 1, exp_on_reg: bool = False,
                 with_objectness: bool = False, conv_cfg=None,
                 norm_cfg: dict = dict(type='BN', momentum=0.03, eps=0.001), act_cfg: dict = dict(type='SiLU'),
                 anchor_generator: dict = dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
                 bbox_coder: dict = dict(type='DistancePointBBoxCoder'),
                 loss_cls: dict = dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
                 loss_bbox: dict = dict(type='GIoULoss', loss_weight=2.0),
                 train_cfg=None, test_cfg=None, init_cfg=None):
        if with_objectness:
            raise BuildError('RTMDetSepBNHead(with_objectness=True) is not supported; RTMDet configs use False',
                             key_path=['with_objectness'])
        self.share_conv = share_conv
        self.act_cfg = act_cfg
        self.prior_generator = PRIOR_GENERATORS.build(anchor_generator)  # the towers need its levels
        super().__init__(num_classes, in_channels, feat_channels, stacked_convs, conv_cfg, norm_cfg,
                         train_cfg=train_cfg, test_cfg=test_cfg, init_cfg=init_cfg)
        self.prior_generator = _build(PRIOR_GENERATORS, anchor_generator, 'anchor_generator')
        self.strides = [s[0] for s in self.prior_generator.strides]
        self.exp_on_reg = exp_on_reg
        self.bbox_coder = _build(BBOX_CODERS, bbox_coder, 'bbox_coder')
        self.loss_cls = _build(LOSSES, loss_cls, 'loss_cls')
        self.loss_bbox = _build(LOSSES, loss_bbox, 'loss_bbox')
        self.assigner = None
        self.pos_weight = -1.0
        if self.train_cfg is not None:
            if self.train_cfg.assigner is None:
                raise BuildError("train_cfg needs an assigner, e.g. dict(type='DynamicSoftLabelAssigner', topk=13)",
                                 key_path=['train_cfg'])
            self.assigner = self.train_cfg.assigner
            self.pos_weight = float(self.train_cfg.pos_weight)
        pad = pred_kernel_size // 2
        levels = range(len(self.strides))
        self.rtm_cls = nn.ModuleList(nn.Conv2d(feat_channels, num_classes, pred_kernel_size, padding=pad)
                                     for _ in levels)
        self.rtm_reg = nn.ModuleList(nn.Conv2d(feat_channels, 4, pred_kernel_size, padding=pad) for _ in levels)
        self._init_weights(self.rtm_cls)

    def _init_weights(self, cls_convs: nn.ModuleList) -> None:
        """As :meth:`ConvTowerHead._init_weights` (which re-initialises every conv, so it runs
        once), then every level's classifier bias at the prior."""
        super()._init_weights(cls_convs[0])
        for cls_conv in cls_convs[1:]:
            nn.init.constant_(cls_conv.bias, -math.log((1 - self.prior_prob) / self.prior_prob))
        for m in self.modules():  # batch norms at identity too (MMDetection's constant_init of norms)
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _tower(self) -> nn.ModuleList:
        """Per level a tower of ``stacked_convs`` ConvModules; with ``share_conv`` every level's
        ``i``-th conv is the same ``nn.Conv2d`` (its norm is the level's own)."""
        towers = nn.ModuleList()
        for _ in range(self.prior_generator.num_levels):
            towers.append(nn.ModuleList(
                ConvModule(self.in_channels if i == 0 else self.feat_channels, self.feat_channels, 3, padding=1,
                           conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
                for i in range(self.stacked_convs)))
        if self.share_conv:
            for tower in towers[1:]:
                for i, conv in enumerate(tower):
                    conv.conv = towers[0][i].conv
        return towers

    def grid_priors(self, featmap_sizes, img_metas, device, dtype):
        return self.prior_generator.grid_priors(featmap_sizes, dtype, device, with_stride=True)

    def forward_single(self, x: Tensor, level: int) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` → logits ``(B, num_classes, H, W)`` and distances in pixels
        ``(B, 4, H, W)``."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs[level]:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs[level]:
            reg_feat = conv(reg_feat)
        reg = self.rtm_reg[level](reg_feat).float()
        return self.rtm_cls[level](cls_feat), (reg.exp() if self.exp_on_reg else reg) * self.strides[level]

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], gt_bboxes: list[Tensor],
             gt_labels: list[Tensor], img_metas: list[dict], gt_bboxes_ignore=None) -> dict:
        """``loss_cls`` (QFL over every point against the IoU of each positive) and
        ``loss_bbox`` (GIoU of the positives weighted by that IoU), both divided by the sum of
        the positives' IoUs (at least 1)."""
        if self.assigner is None:
            raise BuildError('RTMDetSepBNHead was built without a train_cfg: it cannot compute losses',
                             key_path=['train_cfg'])
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        device = cls_scores[0].device
        priors = torch.cat(self.mlvl_priors(featmap_sizes, img_metas, device))  # (N, 4) x, y, sw, sh
        cls_score = _flatten([s.float() for s in cls_scores])  # (B, N, C)
        boxes = self.bbox_coder.decode(priors[None, :, :2], _flatten([b.float() for b in bbox_preds]))  # (B, N, 4)
        B, N = cls_score.shape[:2]
        labels = torch.full((B, N), self.num_classes, dtype=torch.long, device=device)
        label_weights = cls_score.new_zeros((B, N))
        bbox_targets = cls_score.new_zeros((B, N, 4))
        quality = cls_score.new_zeros((B, N))
        with torch.no_grad():
            for i, (gt, gt_label) in enumerate(zip(gt_bboxes, gt_labels)):
                valid = torch.cat(self.prior_generator.valid_flags(
                    featmap_sizes, tuple(img_metas[i].get('pad_shape', img_metas[i]['img_shape']))[:2], device))
                result = self.assigner.assign(priors[valid], boxes[i, valid], cls_score[i, valid],
                                              gt.to(priors.dtype), gt_label)
                idx = valid.nonzero(as_tuple=True)[0]
                pos = result.gt_inds > 0
                matched = result.gt_inds[pos] - 1
                labels[i, idx[pos]] = gt_label[matched].long()
                bbox_targets[i, idx[pos]] = gt.to(priors.dtype)[matched]
                quality[i, idx[pos]] = result.max_overlaps[pos]
                label_weights[i, idx] = 1.0
                if self.pos_weight > 0:
                    label_weights[i, idx[pos]] = self.pos_weight
        pos = labels < self.num_classes
        avg_factor = quality.sum().clamp(min=1)
        loss_cls = self.loss_cls(cls_score.reshape(-1, self.num_classes), (labels.reshape(-1), quality.reshape(-1)),
                                 label_weights.reshape(-1), avg_factor=1.0) / avg_factor
        if pos.any():
            loss_bbox = self.loss_bbox(boxes[pos], bbox_targets[pos], weight=quality[pos], avg_factor=1.0) / avg_factor
        else:
            loss_bbox = boxes.sum() * 0
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    def decode_level(self, priors: Tensor, bbox_pred: Tensor, level: int, max_shape) -> Tensor:
        """Points ``(n, 4)`` and distances in pixels ``(n, 4)`` → boxes ``(n, 4)``."""
        return self.bbox_coder.decode(priors[:, :2], bbox_pred, max_shape=max_shape)
