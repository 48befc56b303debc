"""RPNHead: objectness and box deltas for every anchor, and the proposals they give."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from detforge.models.layers import ConvModule
from detforge.models.postprocess import filter_min_size, nms_from_cfg
from detforge.models.task_modules import padded_batch_shape
from detforge.models.train_test_cfg import DenseTestConfig, DenseTrainConfig, NMSConfig
from detforge.registry import BBOX_CODERS, HEADS, LOSSES, PRIOR_GENERATORS, BuildError

from .dense_targets import (DenseTargets, batch_anchors, compute_dense_targets, dense_assigner_sampler,
                            dense_losses, flatten_levels, inside_flags, normalize_targets)

__all__ = ['RPNHead']


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
        train_cfg, test_cfg: a :class:`DenseTrainConfig` / :class:`DenseTestConfig` (or their
            dicts), filled in by the detector from ``train_cfg.rpn`` / ``test_cfg.rpn``.

    Its targets are the dense heads' shared ones (:func:`compute_dense_targets`); what differs from
    :class:`AnchorHead` is the layers, the loss averaging (over the sampled anchors of the
    batch, as torchvision) and the per-level NMS of the proposals.
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
        self.train_cfg = self.parse_train_cfg(train_cfg)
        self.test_cfg = self.parse_test_cfg(test_cfg)
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
        if self.train_cfg is not None:
            self.assigner, self.sampler = dense_assigner_sampler(self.train_cfg, True)
            self.sampling = type(self.sampler).__name__ != 'PseudoSampler'

        num_anchors = self.prior_generator.num_base_anchors[0]
        self.num_anchors = num_anchors
        if num_convs > 1:
            # MMDetection 2.x: a Sequential of ConvModules (conv + ReLU), keys rpn_conv.i.conv.*
            self.rpn_conv = nn.Sequential(*[
                ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1,
                           inplace=False) for i in range(num_convs)])
        else:
            self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors * self.cls_out_channels, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        self.num_convs = num_convs
        self.init_weights()

    @classmethod
    def parse_train_cfg(cls, cfg, path=('train_cfg',)) -> DenseTrainConfig | None:
        """The typed record of ``train_cfg.rpn`` (see :class:`DenseTrainConfig`)."""
        return DenseTrainConfig.parse(cfg, path)

    @classmethod
    def parse_test_cfg(cls, cfg, path=('test_cfg',)) -> DenseTestConfig | None:
        """The typed record of ``test_cfg.rpn`` / ``train_cfg.rpn_proposal``
        (``max_per_img`` defaults to 1000)."""
        return DenseTestConfig.parse(cfg, path, max_per_img=1000)

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

    def _objectness(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., c) logits -> (...) the logit of 'object' (class 0; background is last) that
        proposals are ranked by: the probability's order without its float32 ties (sigmoids
        of logits above ~17 are all 1.0), as Detectron2 and torchvision rank."""
        if self.use_sigmoid_cls:
            return logits[..., 0]
        return logits[..., 0] - logits[..., 1]  # softmax([a, b])[0] = sigmoid(a - b)

    def _probability(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., c) logits -> (...) probability of 'object' (the proposals' score)."""
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
    def get_targets(self, anchors, valid, gt_bboxes, gt_bboxes_ignore, img_metas) -> DenseTargets:
        """Targets of anchors ``(N, 4)`` with ``valid (B, N)`` flags (see
        :func:`compute_dense_targets`): ``labels (B, N)`` 0 object, 1 background, ``label_weights
        (B, N)``, ``bbox_targets (B, N, 4)``, ``bbox_weights (B, N, 4)``, ``pos``, ``neg``."""
        inside = inside_flags(anchors, valid, [m['img_shape'] for m in img_metas],
                              self.train_cfg.allowed_border)
        return compute_dense_targets(anchors, inside, gt_bboxes, None, self.assigner, self.sampler, 1,
                                     None if self.reg_decoded_bbox else self.bbox_coder.encode,
                                     self.train_cfg.pos_weight, gt_bboxes_ignore)

    def loss(self, cls_scores, bbox_preds, gt_bboxes, img_metas, gt_bboxes_ignore=None):
        """Objectness and box losses, averaged over the sampled anchors of the batch: the dense
        heads' shared steps (:mod:`.dense_targets`), with torchvision's RPN normaliser
        (``'batch_total'``) and the box loss on the positives only.

        Args:
            cls_scores: per level ``(B, A * c, H, W)`` logits (c = 1 sigmoid, 2 softmax).
            bbox_preds: per level ``(B, A * 4, H, W)`` deltas.
            gt_bboxes: per image ``(k_i, 4)`` xyxy px; gt_bboxes_ignore: per image
                ``(m_i, 4)`` or None.
            img_metas: per image, ``img_shape`` and ``pad_shape``.

        Returns:
            ``dict(loss_rpn_cls, loss_rpn_bbox)``, scalar tensors.
        """
        anchors, valid = batch_anchors(self.prior_generator, [s.shape[-2:] for s in cls_scores],
                                       img_metas, cls_scores[0].device,
                                       cache=self.__dict__.setdefault('_anchor_cache', {}))
        t = self.get_targets(anchors, valid, gt_bboxes, gt_bboxes_ignore, img_metas)
        # averaged over the sampled anchors of the batch (torchvision's and MMDetection's
        # count agree unless an image has no positive)
        t, avg_factor = normalize_targets(t, self.sampling, 'batch_total')
        loss_cls, loss_bbox = dense_losses(
            cls_scores, bbox_preds, t, avg_factor, self.loss_cls, self.loss_bbox,
            self.cls_out_channels, anchors, self.bbox_coder.decode if self.reg_decoded_bbox else None,
            positives_only=True)
        return dict(loss_rpn_cls=loss_cls, loss_rpn_bbox=loss_bbox)

    # ------------------------------------------------------------------ proposals
    def simple_test_rpn(self, x, img_metas):
        """Proposals for a batch with ``test_cfg``: per image (n, 5) [x1, y1, x2, y2, score]."""
        cls_scores, bbox_preds = self(x)
        return self.get_bboxes(cls_scores, bbox_preds, img_metas, cfg=self.test_cfg)

    @torch.no_grad()
    def get_bboxes(self, cls_scores, bbox_preds, img_metas, cfg=None, rescale=False):
        """Proposals of a batch, in network-input px (``rescale`` divides by the scale factor).

        Args:
            cls_scores: per level ``(B, A * c, H, W)``; bbox_preds: per level ``(B, A * 4, H, W)``.
            img_metas: per image, ``img_shape`` (boxes are clipped to it), ``scale_factor``.
            cfg: a :class:`DenseTestConfig` (or its dict); default ``self.test_cfg``.

        Returns:
            per image ``(n_i, 5)`` ``[x1, y1, x2, y2, objectness]`` (a probability) sorted by
            objectness (ranked by its logit: no float32 ties).
        """
        cfg = self.test_cfg if cfg is None else self.parse_test_cfg(cfg)
        nms_pre, max_per_img, min_size = cfg.nms_pre, cfg.max_per_img, cfg.min_bbox_size

        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        device = cls_scores[0].device
        # anchors in float32 (bf16/fp16 outputs under autocast too); a float64 model's in float64
        dtype = torch.float64 if cls_scores[0].dtype == torch.float64 else torch.float32
        level_anchors = self.prior_generator.grid_priors(
            featmap_sizes, dtype=dtype, device=device,
            batch_input_shape=padded_batch_shape(img_metas))
        B = cls_scores[0].size(0)
        # ranked by the objectness logit, scored by its probability
        ranks, scores, deltas, anchors, levels = [], [], [], [], []
        for lvl, (s, d, a) in enumerate(zip(cls_scores, bbox_preds, level_anchors)):
            logits = flatten_levels([s.detach()], self.cls_out_channels)
            delta = flatten_levels([d.detach()], 4)
            rank = self._objectness(logits)                      # (B, n)
            score = self._probability(logits)
            if 0 < nms_pre < rank.size(1):
                rank, idx = rank.topk(nms_pre, dim=1)              # sorted, per image
                score = score.gather(1, idx)
                delta = delta.gather(1, idx[..., None].expand(-1, -1, 4))
                a = a[idx]                                         # (B, k, 4)
            else:
                a = a.expand(B, -1, -1)
            ranks.append(rank)
            scores.append(score)
            deltas.append(delta)
            anchors.append(a)
            levels.append(torch.full_like(rank, lvl, dtype=torch.long))
        ranks, scores, deltas = torch.cat(ranks, 1), torch.cat(scores, 1), torch.cat(deltas, 1)
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
        keep = filter_min_size(boxes.reshape(-1, 4), min_size).view_as(levels) if min_size >= 0 \
            else torch.ones_like(levels, dtype=torch.bool)
        if cfg.score_thr > 0:  # torchvision's rpn_score_thresh (MMDetection has none)
            keep &= scores >= cfg.score_thr
        boxes, scores, ranks = boxes[keep], scores[keep], ranks[keep]
        groups = (img_ids * len(cls_scores) + levels)[keep]
        img_ids = img_ids[keep]
        nms = cfg.nms if cfg.nms is not None else NMSConfig(iou_threshold=0.7)
        if nms.type == 'nms' and not nms.class_agnostic:
            # one call for the whole batch, (image, level) pairs as the groups
            kept = batched_nms(boxes, ranks, groups, nms.iou_threshold)    # sorted by logit
        proposals = []
        for i, meta in enumerate(img_metas):
            if nms.type == 'nms' and not nms.class_agnostic:
                k = kept[img_ids[kept] == i]
                k = k[:max_per_img] if max_per_img > 0 else k
                dets = torch.cat([boxes[k], scores[k, None]], 1)
            elif nms.type == 'nms':  # class_agnostic: the levels suppress each other
                mine = torch.nonzero(img_ids == i, as_tuple=True)[0]
                _, k = nms_from_cfg(boxes[mine], ranks[mine], groups[mine], nms, max_per_img)
                dets = torch.cat([boxes[mine[k]], scores[mine[k], None]], 1)
            else:  # soft_nms decays probabilities
                mine = torch.nonzero(img_ids == i, as_tuple=True)[0]
                dets, _ = nms_from_cfg(boxes[mine], scores[mine], groups[mine], nms, max_per_img)
            if rescale:
                factor = dets.new_tensor(meta.get('scale_factor', [1.0] * 4))
                dets[:, :4] /= factor
            proposals.append(dets)
        return proposals
