"""RPNHead: objectness and box deltas for every anchor, and the proposals they give."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from detforge.models.task_modules import assign_batch, gather_assigned, padded_batch_shape, sample_batch
from detforge.registry import (BBOX_ASSIGNERS, BBOX_CODERS, BBOX_SAMPLERS, HEADS, LOSSES,
                               PRIOR_GENERATORS, BuildError)

__all__ = ['RPNHead']


def _get(cfg, key, default=None):
    if cfg is None:
        return default
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


@HEADS.register_module()
class RPNHead(nn.Module):
    """Region proposal head (Ren et al., 2015), MMDetection 2.x semantics.

    On every level: 3x3 conv + ReLU, then a 1x1 conv with ``A`` objectness logits and one with
    ``4 A`` deltas (``A`` anchors per position, channel ``a * 4 + k`` for anchor ``a``).

    Training: per image, anchors are matched by ``train_cfg.assigner`` (IoU 0.7 / 0.3) and
    ``train_cfg.sampler`` picks 256 (half positive); sigmoid cross-entropy on objectness and
    the box loss on positives, both averaged over the sampled anchors of the batch.

    Proposals (``get_bboxes``, cfg = ``test_cfg`` or ``train_cfg.rpn_proposal``): per level
    and image the ``nms_pre`` highest-scoring anchors, decoded and clipped to the image;
    boxes not wider and taller than ``min_bbox_size`` are dropped; NMS (``nms.iou_threshold``)
    runs per level (levels do not suppress each other); the best ``max_per_img`` survive.

    Args:
        in_channels: channels of the input levels; feat_channels: of the 3x3 conv.
        anchor_generator, bbox_coder, loss_cls, loss_bbox: part configs.
        num_convs: 3x3 convs before the predictors.
        reg_decoded_bbox: the box loss sees decoded boxes (IoU losses).
        train_cfg, test_cfg: filled in by the detector from ``train_cfg.rpn`` /
            ``test_cfg.rpn``.
    """

    def __init__(self, in_channels: int, feat_channels: int = 256, num_convs: int = 1,
                 anchor_generator: dict | None = None, bbox_coder: dict | None = None,
                 reg_decoded_bbox: bool = False, loss_cls: dict | None = None,
                 loss_bbox: dict | None = None, train_cfg=None, test_cfg=None,
                 num_classes: int = 1, init_cfg=None):
        super().__init__()
        if num_classes != 1:
            raise BuildError(f'an RPNHead has one class (object), got num_classes={num_classes}')
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.num_classes = 1
        self.reg_decoded_bbox = reg_decoded_bbox
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.prior_generator = PRIOR_GENERATORS.build(anchor_generator or dict(
            type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64]))
        self.anchor_generator = self.prior_generator
        self.bbox_coder = BBOX_CODERS.build(bbox_coder or dict(
            type='DeltaXYWHBBoxCoder', target_means=(.0, .0, .0, .0),
            target_stds=(1.0, 1.0, 1.0, 1.0)))
        self.loss_cls = LOSSES.build(loss_cls or dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0))
        self.loss_bbox = LOSSES.build(loss_bbox or dict(type='L1Loss', loss_weight=1.0))
        self.use_sigmoid_cls = getattr(self.loss_cls, 'use_sigmoid', True)
        self.cls_out_channels = 1 if self.use_sigmoid_cls else 2
        if train_cfg is not None:
            self.assigner = BBOX_ASSIGNERS.build(_get(train_cfg, 'assigner'))
            self.sampler = BBOX_SAMPLERS.build(_get(train_cfg, 'sampler', dict(type='PseudoSampler')))
            if getattr(self.sampler, 'add_gt_as_proposals', False):  # the gts have no anchor slot
                raise BuildError('a dense head samples anchors: set add_gt_as_proposals=False in its sampler',
                                 train_cfg, key_path=['train_cfg', 'sampler', 'add_gt_as_proposals'])
            self.sampling = type(self.sampler).__name__ != 'PseudoSampler'

        num_anchors = self.prior_generator.num_base_anchors[0]
        self.num_anchors = num_anchors
        convs = []
        for i in range(num_convs):
            convs += [nn.Conv2d(in_channels if i == 0 else feat_channels, feat_channels, 3,
                                padding=1), nn.ReLU(inplace=True)]
        self.rpn_conv = nn.Sequential(*convs) if num_convs > 1 else convs[0]
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors * self.cls_out_channels, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        self.num_convs = num_convs
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ forward
    def forward_single(self, x: torch.Tensor):
        x = self.rpn_conv(x)
        if self.num_convs == 1:
            x = F.relu(x, inplace=True)
        return self.rpn_cls(x), self.rpn_reg(x)

    def forward(self, feats):
        """feats: per level (B, C, H, W) -> (cls_scores: per level (B, A * c, H, W),
        bbox_preds: per level (B, A * 4, H, W))."""
        outs = [self.forward_single(x) for x in feats]
        return [o[0] for o in outs], [o[1] for o in outs]

    def _flatten(self, cls_scores, bbox_preds):
        """Per level (B, A*c, H, W) -> (B, N, c) logits and (B, N, 4) deltas, anchors in the
        generator's order (position-major, then anchor)."""
        B = cls_scores[0].size(0)
        logits = torch.cat([s.permute(0, 2, 3, 1).reshape(B, -1, self.cls_out_channels)
                            for s in cls_scores], 1)
        deltas = torch.cat([d.permute(0, 2, 3, 1).reshape(B, -1, 4) for d in bbox_preds], 1)
        return logits, deltas

    def _objectness(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., c) logits -> (...) probability of 'object' (class 0; background is last)."""
        if self.use_sigmoid_cls:
            return logits[..., 0].sigmoid()
        return logits.softmax(-1)[..., 0]

    # ------------------------------------------------------------------ training
    def forward_train(self, x, img_metas, gt_bboxes, gt_labels=None, gt_bboxes_ignore=None,
                      proposal_cfg=None, **kwargs):
        """Losses, and the proposals of ``proposal_cfg`` when given (else None)."""
        cls_scores, bbox_preds = self(x)
        losses = self.loss(cls_scores, bbox_preds, gt_bboxes, img_metas, gt_bboxes_ignore)
        if proposal_cfg is None:
            return losses, None
        return losses, self.get_bboxes(cls_scores, bbox_preds, img_metas, cfg=proposal_cfg)

    @torch.no_grad()
    def get_targets(self, anchors, valid, gt_bboxes, gt_bboxes_ignore):
        """Targets of anchors ``(N, 4)`` with ``valid (B, N)`` flags, the batch assigned at once
        (sampling, when random, draws image by image).

        Returns labels (B, N) [0 object, 1 background], label_weights (B, N),
        bbox_targets (B, N, 4), bbox_weights (B, N, 4) and the number of anchors that count
        in the averages (sampled anchors, or positives without sampling; at least 1)."""
        B, N = valid.shape
        gt_bboxes = [gt.to(anchors.dtype) for gt in gt_bboxes]
        gt_inds, max_overlaps = assign_batch(self.assigner, anchors, valid, gt_bboxes, gt_bboxes_ignore)
        pos, neg = sample_batch(self.sampler, gt_inds, max_overlaps, anchors, gt_bboxes)
        matched_gts = gather_assigned(gt_bboxes, gt_inds, fill=1.)
        targets = matched_gts if self.reg_decoded_bbox else \
            self.bbox_coder.encode(anchors[None].expand(B, N, 4), matched_gts)

        pos_weight = _get(self.train_cfg, 'pos_weight', -1)
        labels = (~pos).long()
        label_weights = pos * (1.0 if pos_weight is None or pos_weight <= 0 else float(pos_weight)) \
            + neg.to(anchors.dtype)
        bbox_targets = torch.where(pos[..., None], targets, 0.)
        bbox_weights = pos[..., None].expand(B, N, 4).to(anchors.dtype)
        num_total = pos.sum() + neg.sum() if self.sampling else pos.sum()
        return labels, label_weights, bbox_targets, bbox_weights, num_total.clamp(min=1).to(anchors.dtype)

    def valid_anchor_flags(self, anchors, featmap_sizes, img_metas):
        """(B, N) bool: anchors on the image's feature cells, and within ``allowed_border``
        px of the image when that is >= 0 (MMDetection's ``anchor_inside_flags``)."""
        flags = []
        border = _get(self.train_cfg, 'allowed_border', -1)
        for meta in img_metas:
            pad_shape = meta.get('pad_shape', meta['img_shape'])
            valid = torch.cat(self.prior_generator.valid_flags(featmap_sizes, pad_shape,
                                                               anchors.device))
            if border is not None and border >= 0:
                h, w = meta['img_shape'][:2]
                valid = valid & (anchors[:, 0] >= -border) & (anchors[:, 1] >= -border) & \
                    (anchors[:, 2] < w + border) & (anchors[:, 3] < h + border)
            flags.append(valid)
        return torch.stack(flags)

    def loss(self, cls_scores, bbox_preds, gt_bboxes, img_metas, gt_bboxes_ignore=None):
        """Returns ``dict(loss_rpn_cls, loss_rpn_bbox)``."""
        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        device = cls_scores[0].device
        anchors = torch.cat(self.prior_generator.grid_priors(
            featmap_sizes, device=device, batch_input_shape=padded_batch_shape(img_metas)))
        valid = self.valid_anchor_flags(anchors, featmap_sizes, img_metas)
        labels, label_weights, bbox_targets, bbox_weights, avg_factor = self.get_targets(
            anchors, valid, gt_bboxes, gt_bboxes_ignore)
        logits, deltas = self._flatten(cls_scores, bbox_preds)

        logits = logits.reshape(-1, self.cls_out_channels)
        loss_cls = self.loss_cls(logits, labels.reshape(-1), label_weights.reshape(-1),
                                 avg_factor=avg_factor)
        pos = bbox_weights[..., 0] > 0
        pred = deltas[pos]
        if self.reg_decoded_bbox:
            pred = self.bbox_coder.decode(anchors.expand(len(img_metas), -1, -1)[pos], pred)
        loss_bbox = self.loss_bbox(pred, bbox_targets[pos], bbox_weights[pos],
                                   avg_factor=avg_factor)
        return dict(loss_rpn_cls=loss_cls, loss_rpn_bbox=loss_bbox)

    # ------------------------------------------------------------------ proposals
    def simple_test_rpn(self, x, img_metas):
        """Proposals for a batch with ``test_cfg``: per image (n, 5) [x1, y1, x2, y2, score]."""
        cls_scores, bbox_preds = self(x)
        return self.get_bboxes(cls_scores, bbox_preds, img_metas, cfg=self.test_cfg)

    @torch.no_grad()
    def get_bboxes(self, cls_scores, bbox_preds, img_metas, cfg=None, rescale=False):
        """Proposals of a batch, in network-input px (``rescale`` divides by the scale factor).

        Returns a list over images of (n_i, 5) tensors sorted by objectness."""
        cfg = cfg if cfg is not None else self.test_cfg
        nms_pre = _get(cfg, 'nms_pre', -1)
        max_per_img = _get(cfg, 'max_per_img', _get(cfg, 'max_num', 1000))
        nms_cfg = _get(cfg, 'nms', None)
        iou_thr = _get(nms_cfg, 'iou_threshold', _get(cfg, 'nms_thr', 0.7))
        min_size = _get(cfg, 'min_bbox_size', 0)
        if nms_cfg is not None and _get(nms_cfg, 'type', 'nms') != 'nms':
            raise BuildError(f"RPN proposals support nms=dict(type='nms'), got {nms_cfg}")

        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        device = cls_scores[0].device
        level_anchors = self.prior_generator.grid_priors(
            featmap_sizes, device=device, batch_input_shape=padded_batch_shape(img_metas))
        B = cls_scores[0].size(0)
        scores, deltas, anchors, levels = [], [], [], []
        for lvl, (s, d, a) in enumerate(zip(cls_scores, bbox_preds, level_anchors)):
            logit, delta = self._flatten([s.detach()], [d.detach()])
            score = self._objectness(logit)                      # (B, n)
            if 0 < nms_pre < score.size(1):
                score, idx = score.topk(nms_pre, dim=1)            # sorted, per image
                delta = delta.gather(1, idx[..., None].expand(-1, -1, 4))
                a = a[idx]                                         # (B, k, 4)
            else:
                a = a.expand(B, -1, -1)
            scores.append(score)
            deltas.append(delta)
            anchors.append(a)
            levels.append(torch.full_like(score, lvl, dtype=torch.long))
        scores, deltas = torch.cat(scores, 1), torch.cat(deltas, 1)
        anchors, levels = torch.cat(anchors, 1), torch.cat(levels, 1)
        boxes = self.bbox_coder.decode(anchors, deltas)          # (B, K, 4)

        # clip to each image, drop tiny boxes, then one NMS call for the whole batch with
        # (image, level) pairs as the groups
        hw = boxes.new_tensor([[m['img_shape'][0], m['img_shape'][1]] for m in img_metas])
        zero = boxes.new_zeros(())
        x1 = torch.max(torch.min(boxes[..., 0], hw[:, 1:]), zero)
        y1 = torch.max(torch.min(boxes[..., 1], hw[:, :1]), zero)
        x2 = torch.max(torch.min(boxes[..., 2], hw[:, 1:]), zero)
        y2 = torch.max(torch.min(boxes[..., 3], hw[:, :1]), zero)
        boxes = torch.stack([x1, y1, x2, y2], -1)
        img_ids = torch.arange(B, device=device)[:, None].expand_as(levels)
        keep = ((x2 - x1) > min_size) & ((y2 - y1) > min_size) if min_size >= 0 else \
            torch.ones_like(levels, dtype=torch.bool)
        boxes, scores = boxes[keep], scores[keep]
        groups = (img_ids * len(cls_scores) + levels)[keep]
        img_ids = img_ids[keep]
        kept = batched_nms(boxes, scores, groups, float(iou_thr))   # sorted by score
        proposals = []
        for i, meta in enumerate(img_metas):
            k = kept[img_ids[kept] == i]
            if max_per_img > 0:
                k = k[:max_per_img]
            dets = torch.cat([boxes[k], scores[k, None]], 1)
            if rescale:
                factor = dets.new_tensor(meta.get('scale_factor', [1.0] * 4))
                dets[:, :4] /= factor
            proposals.append(dets)
        return proposals
