"""BBoxHead: the last layers of a two-stage detector's box branch, its targets, loss and
test-time post-processing (MMDetection 2.x semantics: background is the LAST class index)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detforge.models.postprocess import filter_min_size, nms_from_cfg
from detforge.models.train_test_cfg import NMSConfig, RoITestConfig, RoITrainConfig
from detforge.registry import BBOX_CODERS, HEADS, LOSSES, BuildError

__all__ = ['BBoxHead', 'multiclass_nms', 'clip_to_shape']


def multiclass_nms(multi_bboxes: torch.Tensor, multi_scores: torch.Tensor, score_thr: float,
                   nms_cfg, max_num: int = -1, min_bbox_size: float = 0.):
    """Class-aware NMS over every (box, class) pair scoring above ``score_thr``.

    Args:
        multi_bboxes: (n, 4) shared by all classes, or (n, num_classes * 4).
        multi_scores: (n, num_classes + 1) softmax scores; the last column (background) is
            ignored.
        score_thr: keep pairs with score strictly greater.
        nms_cfg: an :class:`NMSConfig` or its dict, ``dict(type='nms', iou_threshold=0.5)``
            or ``dict(type='soft_nms', ...)``.
        max_num: keep at most this many detections (highest scores first); -1 = all.
        min_bbox_size: drop boxes whose width or height is not above this (px).

    Returns:
        dets (k, 5) ``[x1, y1, x2, y2, score]`` sorted by score, labels (k,) long.
    """
    num_classes = multi_scores.size(1) - 1
    if multi_bboxes.size(1) > 4:
        bboxes = multi_bboxes.view(multi_scores.size(0), -1, 4)
    else:
        bboxes = multi_bboxes[:, None].expand(multi_scores.size(0), num_classes, 4)
    scores = multi_scores[:, :-1]
    labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)
    bboxes, scores, labels = bboxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)

    if nms_cfg is None:
        raise BuildError('the test config needs nms=dict(type="nms", iou_threshold=...)')
    nms_cfg = NMSConfig.parse(nms_cfg)
    keep = scores > score_thr
    if min_bbox_size > 0:
        keep &= filter_min_size(bboxes, min_bbox_size)
    bboxes, scores, labels = bboxes[keep], scores[keep], labels[keep]
    if bboxes.numel() == 0:
        return bboxes.new_zeros(0, 5), labels
    dets, keep = nms_from_cfg(bboxes, scores, labels, nms_cfg, max_num)
    return dets, labels[keep]


def clip_to_shape(boxes: torch.Tensor, img_shape) -> torch.Tensor:
    """Clamp (n, 4) boxes to ``[0, w] x [0, h]``; img_shape is (h, w, ...) or (n, 2)."""
    if img_shape is None:
        return boxes
    if torch.is_tensor(img_shape) and img_shape.dim() == 2:
        h, w = img_shape[:, 0], img_shape[:, 1]
        zero = torch.zeros_like(h)
        return torch.stack([torch.max(torch.min(boxes[:, 0], w), zero),
                            torch.max(torch.min(boxes[:, 1], h), zero),
                            torch.max(torch.min(boxes[:, 2], w), zero),
                            torch.max(torch.min(boxes[:, 3], h), zero)], 1)
    h, w = float(img_shape[0]), float(img_shape[1])
    return torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                        boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1)


@HEADS.register_module()
class BBoxHead(nn.Module):
    """Two linear predictors on pooled RoI features: class scores and box deltas.

    Args:
        with_avg_pool: average-pool the (C, 7, 7) RoI feature to (C,) first.
        roi_feat_size: side of the pooled RoI feature.
        in_channels: channels of the RoI feature.
        num_classes: foreground classes; ``fc_cls`` has ``num_classes + 1`` outputs and the
            last one is background.
        bbox_coder: ``DeltaXYWHBBoxCoder`` config (``target_stds`` 0.1/0.2 for Faster R-CNN).
        reg_class_agnostic: one box per RoI instead of one per class.
        reg_decoded_bbox: the box loss sees decoded boxes (for IoU-type losses) instead of
            deltas.
        loss_cls, loss_bbox: loss configs.
    """

    def __init__(self, with_avg_pool: bool = False, with_cls: bool = True, with_reg: bool = True,
                 roi_feat_size: int = 7, in_channels: int = 256, num_classes: int = 80,
                 bbox_coder: dict | None = None, reg_class_agnostic: bool = False,
                 reg_decoded_bbox: bool = False, reg_predictor_cfg=None, cls_predictor_cfg=None,
                 loss_cls: dict | None = None, loss_bbox: dict | None = None, init_cfg=None):
        super().__init__()
        if not (with_cls or with_reg):
            raise BuildError('a BBoxHead needs with_cls or with_reg')
        self.with_avg_pool = with_avg_pool
        self.with_cls = with_cls
        self.with_reg = with_reg
        self.roi_feat_size = (roi_feat_size, roi_feat_size) if isinstance(roi_feat_size, int) \
            else tuple(roi_feat_size)
        self.roi_feat_area = self.roi_feat_size[0] * self.roi_feat_size[1]
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.reg_class_agnostic = reg_class_agnostic
        self.reg_decoded_bbox = reg_decoded_bbox
        self.custom_activation = False
        self.bbox_coder = BBOX_CODERS.build(bbox_coder or dict(
            type='DeltaXYWHBBoxCoder', clip_border=True, target_means=[0., 0., 0., 0.],
            target_stds=[0.1, 0.1, 0.2, 0.2]))
        self.loss_cls = LOSSES.build(loss_cls or dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
        self.loss_bbox = LOSSES.build(loss_bbox or dict(
            type='SmoothL1Loss', beta=1.0, loss_weight=1.0))

        in_features = in_channels if with_avg_pool else in_channels * self.roi_feat_area
        if with_avg_pool:
            # a (roi_feat_size)-wide window, as MMDetection: its summation order (not
            # adaptive_avg_pool2d's) gives the same float32 logits bit for bit
            self.avg_pool = nn.AvgPool2d(self.roi_feat_size)
        if with_cls:
            self.fc_cls = nn.Linear(in_features, num_classes + 1)
        if with_reg:
            self.fc_reg = nn.Linear(in_features, 4 if reg_class_agnostic else 4 * num_classes)

    @property
    def cls_out_channels(self) -> int:
        return self.num_classes + 1

    def init_weights(self) -> None:
        if self.with_cls:
            nn.init.normal_(self.fc_cls.weight, 0, 0.01)
            nn.init.zeros_(self.fc_cls.bias)
        if self.with_reg:
            nn.init.normal_(self.fc_reg.weight, 0, 0.001)
            nn.init.zeros_(self.fc_reg.bias)

    def forward(self, x: torch.Tensor):
        """x (n, C, 7, 7) -> cls_score (n, num_classes + 1), bbox_pred (n, 4 or 4 * classes)."""
        if self.with_avg_pool:
            # avg_pool2d refuses an empty batch; the mean is the same function
            x = self.avg_pool(x) if x.numel() else x.mean(dim=(-1, -2))
        x = x.flatten(1)
        cls_score = self.fc_cls(x) if self.with_cls else None
        bbox_pred = self.fc_reg(x) if self.with_reg else None
        return cls_score, bbox_pred

    # ------------------------------------------------------------------ training
    def get_targets(self, sampling_results, gt_bboxes, gt_labels, rcnn_train_cfg,
                    concat: bool = True):
        """Per sampled RoI: label (background = num_classes), label weight, box target and
        box weight; positives first in each image, as ``SamplingResult.bboxes`` orders them."""
        rcnn_train_cfg = RoITrainConfig.parse(rcnn_train_cfg, ('train_cfg', 'rcnn'))
        pos_weight = -1 if rcnn_train_cfg is None else rcnn_train_cfg.pos_weight
        pos_weight = 1.0 if pos_weight <= 0 else float(pos_weight)
        labels, label_weights, bbox_targets, bbox_weights = [], [], [], []
        for res in sampling_results:
            num_pos, num_neg = res.pos_bboxes.size(0), res.neg_bboxes.size(0)
            n = num_pos + num_neg
            pos_bboxes = res.pos_bboxes
            lab = pos_bboxes.new_full((n,), self.num_classes, dtype=torch.long)
            lab_w = pos_bboxes.new_zeros(n)
            tgt = pos_bboxes.new_zeros(n, 4)
            tgt_w = pos_bboxes.new_zeros(n, 4)
            if num_pos > 0:
                lab[:num_pos] = res.pos_gt_labels
                lab_w[:num_pos] = pos_weight
                tgt[:num_pos] = res.pos_gt_bboxes if self.reg_decoded_bbox else \
                    self.bbox_coder.encode(pos_bboxes, res.pos_gt_bboxes)
                tgt_w[:num_pos] = 1.0
            if num_neg > 0:
                lab_w[num_pos:] = 1.0
            labels.append(lab)
            label_weights.append(lab_w)
            bbox_targets.append(tgt)
            bbox_weights.append(tgt_w)
        if concat:
            return (torch.cat(labels), torch.cat(label_weights), torch.cat(bbox_targets),
                    torch.cat(bbox_weights))
        return labels, label_weights, bbox_targets, bbox_weights

    def loss(self, cls_score, bbox_pred, rois, labels, label_weights, bbox_targets,
             bbox_weights, reduction_override=None) -> dict:
        """Cross-entropy over all sampled RoIs; box loss on positives only, averaged over all
        sampled RoIs (MMDetection 2.x and torchvision both divide by the sample count).
        In float32 under autocast, as MMDetection's ``force_fp32``."""
        cls_score = cls_score.float() if cls_score is not None else None
        bbox_pred = bbox_pred.float() if bbox_pred is not None else None
        losses = {}
        if cls_score is not None and cls_score.numel() > 0:
            avg_factor = max(float((label_weights > 0).sum()), 1.)
            losses['loss_cls'] = self.loss_cls(cls_score, labels, label_weights,
                                               avg_factor=avg_factor,
                                               reduction_override=reduction_override)
            with torch.no_grad():
                losses['acc'] = (cls_score.argmax(1) == labels).float().mean() * 100
        if bbox_pred is not None:
            pos = (labels >= 0) & (labels < self.num_classes)
            if pos.any():
                if self.reg_decoded_bbox:
                    bbox_pred = self.decode_per_class(rois[:, 1:], bbox_pred)
                if self.reg_class_agnostic:
                    pos_pred = bbox_pred.view(bbox_pred.size(0), 4)[pos]
                else:
                    pos_pred = bbox_pred.view(bbox_pred.size(0), -1, 4)[pos, labels[pos]]
                losses['loss_bbox'] = self.loss_bbox(pos_pred, bbox_targets[pos],
                                                     bbox_weights[pos],
                                                     avg_factor=bbox_targets.size(0),
                                                     reduction_override=reduction_override)
            else:
                losses['loss_bbox'] = bbox_pred[pos].sum()
        return losses

    # ------------------------------------------------------------------ testing
    def decode_per_class(self, boxes: torch.Tensor, bbox_pred: torch.Tensor) -> torch.Tensor:
        """boxes (n, 4), bbox_pred (n, 4 * k) -> decoded (n, 4 * k), k = 1 or num_classes."""
        n = boxes.size(0)
        return self.bbox_coder.decode(boxes[:, None, :], bbox_pred.view(n, -1, 4)).view(n, -1)

    def get_bboxes(self, rois, cls_score, bbox_pred, img_shape, scale_factor, rescale=False,
                   cfg=None, score_is_prob: bool = False):
        """Detections of one image.

        Args:
            rois: (n, 5) ``[batch_idx, x1, y1, x2, y2]`` in network-input px.
            cls_score: (n, num_classes + 1) logits; bbox_pred: (n, 4 or 4 * num_classes).
            img_shape: (h, w, ...) of the resized image (boxes are clipped to it).
            scale_factor: ``[w, h, w, h]`` network-input px per original px.
            rescale: return boxes in original-image px.
            cfg: ``score_thr``, ``nms``, ``max_per_img`` (and optional ``min_bbox_size``);
                None returns every box and score without NMS.
            score_is_prob: ``cls_score`` already holds probabilities (a cascade's averaged
                softmax, Detectron2); no softmax is applied.

        Returns:
            dets (k, 5), labels (k,) (or boxes (n, 4*C), scores (n, C+1) when cfg is None).
        """
        scores = cls_score if score_is_prob or cls_score is None else F.softmax(cls_score, dim=-1)
        n = rois.size(0)
        if bbox_pred is not None:
            bboxes = self.decode_per_class(rois[:, 1:], bbox_pred)
        else:
            bboxes = rois[:, 1:]
        bboxes = clip_to_shape(bboxes.reshape(-1, 4), img_shape).view(n, -1)
        if rescale and bboxes.size(0) > 0:
            factor = torch.as_tensor(np.asarray(scale_factor, dtype=np.float32),
                                     device=bboxes.device)
            bboxes = (bboxes.view(bboxes.size(0), -1, 4) / factor).view(bboxes.size(0), -1)
        if cfg is None:
            return bboxes, scores
        cfg = RoITestConfig.parse(cfg, ('test_cfg', 'rcnn'))
        return multiclass_nms(bboxes, scores, cfg.score_thr, cfg.nms, cfg.max_per_img,
                              cfg.min_bbox_size)

    def regress_by_class(self, rois, label, bbox_pred, img_meta):
        """Decode each RoI with the deltas of its class and clip it to the image.

        Args:
            rois: (n, 4) boxes or (n, 5) RoIs (the batch index is kept).
            label: (n,) class whose deltas are used (ignored when class-agnostic).
            bbox_pred: (n, 4) or (n, 4 * num_classes).
            img_meta: its ``img_shape`` is ``(h, w, ...)`` or a per-RoI (n, 2) tensor.
        """
        if not self.reg_class_agnostic:
            bbox_pred = bbox_pred.view(bbox_pred.size(0), -1, 4)
            bbox_pred = bbox_pred[torch.arange(bbox_pred.size(0), device=label.device), label]
        boxes = rois if rois.size(1) == 4 else rois[:, 1:]
        boxes = clip_to_shape(self.bbox_coder.decode(boxes, bbox_pred), img_meta['img_shape'])
        return boxes if rois.size(1) == 4 else torch.cat([rois[:, :1], boxes], 1)

    def refine_bboxes(self, rois, labels, bbox_preds, pos_is_gts, img_metas):
        """Boxes for the next cascade stage: every sampled RoI decoded with its own deltas
        (class = its target label, or the predicted one for background), minus the GT boxes
        that were added as proposals.

        Args:
            rois: (n, 5) sampled RoIs of the batch, each image's positives first.
            labels: (n,) class used to pick the deltas.
            bbox_preds: (n, 4 or 4 * num_classes).
            pos_is_gts: per image, (num_pos,) uint8/bool: that positive is a GT box.

        Returns:
            list over images of (m_i, 4) boxes.
        """
        img_ids = rois[:, 0].long()
        refined = []
        for i, img_meta in enumerate(img_metas):
            inds = torch.nonzero(img_ids == i, as_tuple=True)[0]
            boxes = self.regress_by_class(rois[inds, 1:], labels[inds], bbox_preds[inds],
                                          img_meta)
            keep = torch.ones(inds.numel(), dtype=torch.bool, device=rois.device)
            is_gt = pos_is_gts[i].bool()
            keep[:is_gt.numel()] = ~is_gt
            refined.append(boxes[keep])
        return refined
