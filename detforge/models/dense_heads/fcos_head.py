"""FCOS's head (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019).

Training reads as the algorithm:

    points (one per position and level) ─► targets for the whole batch at once: a point inside a
    ground truth (or inside its centre region, with ``center_sampling``) whose largest distance
    to the box's sides is in its level's ``regress_range`` is positive for the smallest such box
    ─► focal loss on every point; IoU loss weighted by the centerness target and the
    centerness loss on the positives.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from detforge.registry import BBOX_CODERS, HEADS, LOSSES, PRIOR_GENERATORS, BuildError

from .conv_tower_head import ConvTowerHead, Scale, _build

__all__ = ['FCOSHead', 'fcos_targets', 'centerness_target']

INF = 1e8


def fcos_targets(points: Tensor, point_strides: Tensor, regress_ranges: Tensor,
                 gt_bboxes_list: Sequence[Tensor], gt_labels_list: Sequence[Tensor], num_classes: int,
                 center_sample_radius: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """FCOS targets of every point of every image, the batch at once.

    Args:
        points: ``(N, 2)`` ``(x, y)`` of all levels.
        point_strides: ``(N,)`` stride of each point's level (for the centre region).
        regress_ranges: ``(N, 2)`` ``(low, high)`` of each point's level.
        gt_bboxes_list: per image ``(k_i, 4)``; ``gt_labels_list`` per image ``(k_i,)``.
        center_sample_radius: with a value ``r``, a point must also lie within ``r * stride`` of
            the box's centre (per axis); None: anywhere inside the box.

    Returns:
        ``labels (B, N)`` long (``num_classes`` = background), ``bbox_targets (B, N, 4)``
        ``(left, top, right, bottom)`` distances in pixels to the assigned box (meaningless for
        background) and ``gt_inds (B, N)`` the assigned box's index (``-1``: background). Of
        several boxes, the one of smallest area wins (the first on a tie).
    """
    B, N, K = len(gt_bboxes_list), points.size(0), max([len(g) for g in gt_bboxes_list] + [1])
    gts = points.new_zeros((B, K, 4))
    gt_labels = torch.full((B, K), num_classes, dtype=torch.long, device=points.device)
    present = torch.zeros((B, K), dtype=torch.bool, device=points.device)
    for i, (b, l) in enumerate(zip(gt_bboxes_list, gt_labels_list)):
        gts[i, :len(b)] = b
        gt_labels[i, :len(b)] = l
        present[i, :len(b)] = True

    x, y = points[None, :, 0, None], points[None, :, 1, None]  # (1, N, 1)
    x1, y1, x2, y2 = (gts[:, None, :, j] for j in range(4))  # (B, 1, K)
    dist = torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=-1)  # (B, N, K, 4)
    if center_sample_radius is None:
        inside = dist.min(dim=-1).values > 0
    else:
        r = (point_strides * center_sample_radius)[None, :, None]  # (1, N, 1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        # the centre region, clipped to the box
        region = torch.stack([x - torch.maximum(cx - r, x1), y - torch.maximum(cy - r, y1),
                              torch.minimum(cx + r, x2) - x, torch.minimum(cy + r, y2) - y], dim=-1)
        inside = region.min(dim=-1).values > 0
    max_dist = dist.max(dim=-1).values
    in_range = (max_dist >= regress_ranges[None, :, 0, None]) & (max_dist <= regress_ranges[None, :, 1, None])
    areas = ((x2 - x1) * (y2 - y1)).expand(B, N, K)
    # (the padding boxes are empty and contain no point; the mask says so explicitly)
    areas = torch.where(inside & in_range & present[:, None, :], areas, areas.new_tensor(INF))
    min_area, gt_idx = areas.min(dim=2)  # (B, N)
    labels = gt_labels.gather(1, gt_idx)
    background = min_area == INF
    labels = torch.where(background, num_classes, labels)
    bbox_targets = dist.gather(2, gt_idx[..., None, None].expand(B, N, 1, 4)).squeeze(2)
    return labels, bbox_targets, torch.where(background, -1, gt_idx)


def centerness_target(distances: Tensor) -> Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of ``(n, 4)`` ``(l, t, r, b)``
    distances → ``(n,)``: 1 at a box's centre, towards 0 at its sides."""
    if distances.numel() == 0:
        return distances.new_zeros((0,))
    lr, tb = distances[:, [0, 2]], distances[:, [1, 3]]
    return torch.sqrt(lr.min(dim=-1).values / lr.max(dim=-1).values
                      * (tb.min(dim=-1).values / tb.max(dim=-1).values))


@HEADS.register_module()
class FCOSHead(ConvTowerHead):
    """FCOS: per point, class logits, ``(l, t, r, b)`` distances and a centerness logit.

    Parameter names are MMDetection 2.x's (``cls_convs``, ``reg_convs``, ``conv_cls``,
    ``conv_reg``, ``conv_centerness``, ``scales``), so its checkpoints load.

    Args:
        num_classes, in_channels, feat_channels, stacked_convs, conv_cfg, conv_bias,
            dcn_on_last_conv: see :class:`ConvTowerHead`.
        strides: stride of each level.
        regress_ranges: ``(low, high)`` per level: a point predicts the boxes whose largest
            side distance from it is in its range (both ends included).
        center_sampling: positives only within ``center_sample_radius * stride`` of a box's
            centre.
        norm_on_bbox: regress distances in units of the stride, through a ReLU (the improved
            FCOS) instead of ``exp``.
        centerness_on_reg: the centerness conv reads the regression tower instead of the
            classification tower.
        norm_cfg: norm of the towers (default: GroupNorm, 32 groups).
        loss_cls, loss_bbox, loss_centerness: loss configs (focal, IoU, binary cross-entropy).
        bbox_coder: decodes distances from points (``DistancePointBBoxCoder``).
        prior_generator: the points (default ``MlvlPointGenerator(strides, offset=0.5)``).
        train_cfg: accepted for MMDetection 2.x configs (FCOS assigns by itself and ignores it).
        test_cfg: ``nms_pre``, ``score_thr``, ``nms``, ``max_per_img``, ``score_factor_fusion``.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 256, stacked_convs: int = 4,
                 strides: Sequence[int] = (4, 8, 16, 32, 64),
                 regress_ranges: Sequence[tuple[float, float]] = ((-1, 64), (64, 128), (128, 256), (256, 512),
                                                                  (512, INF)),
                 center_sampling: bool = False, center_sample_radius: float = 1.5,
                 norm_on_bbox: bool = False, centerness_on_reg: bool = False,
                 dcn_on_last_conv: bool = False, conv_bias='auto', conv_cfg: dict | None = None,
                 norm_cfg: dict | None = dict(type='GN', num_groups=32, requires_grad=True),
                 loss_cls: dict = dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                 loss_bbox: dict = dict(type='IoULoss', loss_weight=1.0),
                 loss_centerness: dict = dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 bbox_coder: dict = dict(type='DistancePointBBoxCoder'),
                 prior_generator: dict | None = None, train_cfg=None, test_cfg=None, init_cfg=None):
        super().__init__(num_classes, in_channels, feat_channels, stacked_convs, conv_cfg, norm_cfg, conv_bias,
                         dcn_on_last_conv, train_cfg=train_cfg, test_cfg=test_cfg, init_cfg=init_cfg)
        if len(regress_ranges) != len(strides):
            raise BuildError(f'regress_ranges has {len(regress_ranges)} levels for {len(strides)} strides',
                             key_path=['regress_ranges'])
        if not loss_cls.get('use_sigmoid', True):
            raise BuildError('FCOSHead classifies with sigmoids: loss_cls needs use_sigmoid=True',
                             key_path=['loss_cls', 'use_sigmoid'])
        self.strides = [int(s) for s in strides]
        self.regress_ranges = [tuple(float(v) for v in r) for r in regress_ranges]
        self.center_sampling = center_sampling
        self.center_sample_radius = center_sample_radius
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        self.loss_cls = _build(LOSSES, loss_cls, 'loss_cls')
        self.loss_bbox = _build(LOSSES, loss_bbox, 'loss_bbox')
        self.loss_centerness = _build(LOSSES, loss_centerness, 'loss_centerness')
        self.bbox_coder = _build(BBOX_CODERS, bbox_coder, 'bbox_coder')
        prior_generator = prior_generator or dict(type='MlvlPointGenerator', strides=self.strides, offset=0.5)
        self.prior_generator = _build(PRIOR_GENERATORS, prior_generator, 'prior_generator')
        if self.prior_generator.num_levels != len(self.strides):
            raise BuildError(f'prior_generator has {self.prior_generator.num_levels} levels for '
                             f'{len(self.strides)} strides', key_path=['prior_generator'])
        self.conv_cls = nn.Conv2d(feat_channels, self.cls_out_channels, 3, padding=1)
        self.conv_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self._init_weights(self.conv_cls)

    def grid_priors(self, featmap_sizes, img_metas, device, dtype):
        return self.prior_generator.grid_priors(featmap_sizes, dtype, device,
                                                batch_input_shape=self.input_shape(img_metas))

    # ------------------------------------------------------------------ forward
    def forward_single(self, x: Tensor, level: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, C, H, W)`` → logits ``(B, num_classes, H, W)``, distances ``(B, 4, H, W)``
        (in training: in stride units with ``norm_on_bbox``; at inference: pixels) and
        centerness logits ``(B, 1, H, W)``."""
        cls_feat, reg_feat = self.tower_features(x)
        cls_score = self.conv_cls(cls_feat)
        bbox_pred = self.scales[level](self.conv_reg(reg_feat)).float()
        centerness = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        if self.norm_on_bbox:
            bbox_pred = bbox_pred.clamp(min=0)
            if not self.training:
                bbox_pred = bbox_pred * self.strides[level]
        else:
            bbox_pred = bbox_pred.exp()
        return cls_score, bbox_pred, centerness

    # ------------------------------------------------------------------ targets and losses
    def get_targets(self, mlvl_points: list[Tensor], gt_bboxes_list, gt_labels_list) -> dict:
        """Targets of the batch: ``labels (B, N)``, ``bbox_targets (B, N, 4)`` (in stride units
        with ``norm_on_bbox``), ``gt_inds (B, N)`` (-1: background), ``points (N, 2)``; ``N`` runs
        over all levels."""
        points = torch.cat(mlvl_points)
        counts = [len(p) for p in mlvl_points]
        strides = points.new_tensor(self.strides).repeat_interleave(points.new_tensor(counts, dtype=torch.long))
        ranges = points.new_tensor(self.regress_ranges).repeat_interleave(
            points.new_tensor(counts, dtype=torch.long), dim=0)
        labels, bbox_targets, gt_inds = fcos_targets(
            points, strides, ranges, [g.to(points.dtype) for g in gt_bboxes_list],
            [l.to(torch.long) for l in gt_labels_list], self.num_classes,
            self.center_sample_radius if self.center_sampling else None)
        if self.norm_on_bbox:
            bbox_targets = bbox_targets / strides[None, :, None]
        return dict(labels=labels, bbox_targets=bbox_targets, gt_inds=gt_inds, points=points)

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], centernesses: list[Tensor],
             gt_bboxes: list[Tensor], gt_labels: list[Tensor], img_metas: list[dict],
             gt_bboxes_ignore=None) -> dict:
        """``loss_cls`` (over all points, divided by the number of positives), ``loss_bbox``
        (IoU loss of the positives weighted by their centerness targets, divided by the sum of
        those) and ``loss_centerness`` (divided by the number of positives).

        ``gt_bboxes_ignore`` is not used (as in MMDetection's FCOS)."""
        cls_scores = [s.float() for s in cls_scores]
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        mlvl_points = self.mlvl_priors(featmap_sizes, img_metas, cls_scores[0].device)
        with torch.no_grad():
            t = self.get_targets(mlvl_points, gt_bboxes, gt_labels)
        cls_score = _flatten(cls_scores).reshape(-1, self.cls_out_channels)  # (B * N, C)
        bbox_pred = _flatten([b.float() for b in bbox_preds])  # (B, N, 4)
        centerness = _flatten([c.float() for c in centernesses])[..., 0]  # (B, N)

        pos = t['labels'] < self.num_classes  # (B, N)
        num_pos = pos.sum().to(cls_score.dtype).clamp(min=1.0)
        loss_cls = self.loss_cls(cls_score, t['labels'].reshape(-1), avg_factor=num_pos)

        pos_targets = t['bbox_targets'][pos]
        pos_centerness_targets = centerness_target(pos_targets)
        centerness_denorm = pos_centerness_targets.sum().clamp(min=1e-6)
        pos_points = t['points'][None].expand(pos.size(0), -1, -1)[pos]
        if pos_targets.numel() > 0:
            loss_bbox = self.loss_bbox(self.bbox_coder.decode(pos_points, bbox_pred[pos]),
                                       self.bbox_coder.decode(pos_points, pos_targets),
                                       weight=pos_centerness_targets, avg_factor=centerness_denorm)
            loss_centerness = self.loss_centerness(centerness[pos], pos_centerness_targets, avg_factor=num_pos)
        else:  # zero, but connected to the graph
            loss_bbox = bbox_pred.sum() * 0
            loss_centerness = centerness.sum() * 0
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_centerness=loss_centerness)

    # ------------------------------------------------------------------ inference
    def decode_level(self, priors: Tensor, bbox_pred: Tensor, level: int, max_shape) -> Tensor:
        """Points ``(n, 2)`` and distances in pixels ``(n, 4)`` → boxes ``(n, 4)``."""
        return self.bbox_coder.decode(priors, bbox_pred, max_shape=max_shape)


def _flatten(maps: Sequence[Tensor]) -> Tensor:
    """Per level ``(B, C, H, W)`` → ``(B, sum H * W, C)``, level after level, row-major."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.size(0), -1, m.size(1)) for m in maps], dim=1)
