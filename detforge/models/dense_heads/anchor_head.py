"""Anchor-based dense head: per-anchor classification and box regression.

The training path reads as the algorithm:

    anchors (one set, shared by the batch) ─► valid flags per image
    ─► assign each anchor to a ground truth (MaxIoUAssigner) ─► sample (PseudoSampler: all)
    ─► encode box targets ─► classification and regression losses

each step on the whole batch at once, with no host synchronisation (a random sampler alone
draws image by image),

and the inference path as: per level, top ``nms_pre`` scores above ``score_thr`` ─► decode ─►
(rescale to the original image) ─► class-aware batched NMS ─► ``max_per_img``.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detforge.registry import (BBOX_ASSIGNERS, BBOX_CODERS, BBOX_SAMPLERS, HEADS, LOSSES,
                               PRIOR_GENERATORS, BuildError)
from detforge.models.task_modules import assign_batch, gather_assigned, padded_batch_shape, sample_batch
from detforge.structures import bbox_mapping_back

__all__ = ['AnchorHead', 'get_nms_cfg']

_NO_SAMPLING_LOSSES = ('FocalLoss', 'GHMC', 'QualityFocalLoss')


def _cfg_get(cfg, key, default=None):
    if cfg is None:
        return default
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


def get_nms_cfg(cfg) -> tuple[str, float]:
    """``(type, iou_threshold)`` from a test config's ``nms`` entry; the 1.x key ``iou_thr``
    is accepted with a DeprecationWarning."""
    nms = _cfg_get(cfg, 'nms')
    if nms is None:
        raise BuildError("test_cfg needs nms=dict(type='nms', iou_threshold=...)", cfg, key_path=['nms'])
    nms = dict(nms)
    nms_type = nms.pop('type', 'nms')
    if nms_type != 'nms':
        raise BuildError(f"nms type {nms_type!r} is not supported; use type='nms'", cfg, key_path=['nms', 'type'])
    if 'iou_thr' in nms:
        warnings.warn("test_cfg.nms.iou_thr is deprecated; write nms=dict(type='nms', iou_threshold=...)",
                      DeprecationWarning, stacklevel=3)
        nms.setdefault('iou_threshold', nms.pop('iou_thr'))
    if 'iou_threshold' not in nms:
        raise BuildError('test_cfg.nms needs iou_threshold', cfg, key_path=['nms'])
    return nms_type, float(nms['iou_threshold'])


@HEADS.register_module()
class AnchorHead(nn.Module):
    """A head that classifies and regresses a fixed set of anchors on every feature level.

    Args:
        num_classes: object classes (no background).
        in_channels: channels of the input features.
        feat_channels: channels of the hidden convs (in subclasses).
        anchor_generator: config of the :class:`AnchorGenerator`.
        bbox_coder: config of the box coder.
        reg_decoded_bbox: regress decoded boxes (needed by IoU/GIoU losses) instead of deltas.
        loss_cls, loss_bbox: loss configs.
        loss_normalizer_momentum: Detectron2's normaliser: divide the losses by a moving average
            (this momentum, starting at ``loss_normalizer_init``) of the number of positives
            instead of the current number. ``None`` (default) uses the current number.
        loss_normalization: ``'batch'`` (MMDetection, default): each loss is its sum over the
            batch divided by the batch's number of positives (sum over images of
            ``max(n_i, 1)``). ``'per_image'`` (torchvision's RetinaNet): each image's sum divided
            by its own ``max(n_i, 1)``, then the mean over the images. Same at batch 1.
        train_cfg: ``assigner``, ``sampler`` (default PseudoSampler), ``allowed_border``
            (anchors reaching further outside the image are not used; ``-1`` keeps all),
            ``pos_weight`` (``<= 0``: 1).
        test_cfg: ``nms_pre``, ``score_thr``, ``nms=dict(type='nms', iou_threshold=...)``,
            ``max_per_img``.
        anchor_scales, anchor_ratios, anchor_strides, anchor_base_sizes, octave_base_scale,
        scales_per_octave, target_means, target_stds: MMDetection 1.x keys, accepted with a
            DeprecationWarning and turned into ``anchor_generator`` / ``bbox_coder``.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 256,
                 anchor_generator: dict = dict(type='AnchorGenerator', scales=[8, 16, 32],
                                               ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
                 bbox_coder: dict = dict(type='DeltaXYWHBBoxCoder', clip_border=True,
                                         target_means=(.0, .0, .0, .0), target_stds=(1.0, 1.0, 1.0, 1.0)),
                 reg_decoded_bbox: bool = False,
                 loss_cls: dict = dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 loss_bbox: dict = dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0),
                 loss_normalizer_momentum: float | None = None, loss_normalizer_init: float = 100.,
                 loss_normalization: str = 'batch',
                 train_cfg: dict | None = None, test_cfg: dict | None = None, init_cfg=None,
                 anchor_scales=None, anchor_ratios=None, anchor_strides=None, anchor_base_sizes=None,
                 octave_base_scale=None, scales_per_octave=None, target_means=None, target_stds=None):
        super().__init__()
        anchor_generator, bbox_coder = self._legacy_keys(
            anchor_generator, bbox_coder, anchor_scales, anchor_ratios, anchor_strides,
            anchor_base_sizes, octave_base_scale, scales_per_octave, target_means, target_stds)
        if num_classes <= 0:
            raise BuildError(f'num_classes must be positive, got {num_classes}', key_path=['num_classes'])
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.use_sigmoid_cls = loss_cls.get('use_sigmoid', False)
        self.cls_out_channels = num_classes if self.use_sigmoid_cls else num_classes + 1
        self.reg_decoded_bbox = reg_decoded_bbox
        self.sampling = loss_cls.get('type') not in _NO_SAMPLING_LOSSES
        self.bbox_coder = self._build(BBOX_CODERS, bbox_coder, 'bbox_coder')
        self.loss_cls = self._build(LOSSES, loss_cls, 'loss_cls')
        self.loss_bbox = self._build(LOSSES, loss_bbox, 'loss_bbox')
        self.anchor_generator = self._build(PRIOR_GENERATORS, anchor_generator, 'anchor_generator')
        self.prior_generator = self.anchor_generator
        self.num_anchors = self.anchor_generator.num_base_anchors[0]
        if len(set(self.anchor_generator.num_base_anchors)) != 1:
            raise BuildError('every level must have the same number of anchors per position',
                             key_path=['anchor_generator'])
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.init_cfg = init_cfg
        if train_cfg is not None:
            if 'assigner' not in train_cfg:
                raise BuildError('train_cfg needs an assigner, e.g. dict(type="MaxIoUAssigner", ...)',
                                 train_cfg, key_path=['train_cfg'])
            self.assigner = self._build(BBOX_ASSIGNERS, train_cfg['assigner'], 'train_cfg', 'assigner')
            sampler_cfg = train_cfg.get('sampler') if self.sampling else None
            self.sampler = self._build(BBOX_SAMPLERS, sampler_cfg or dict(type='PseudoSampler'),
                                       'train_cfg', 'sampler')
            if getattr(self.sampler, 'add_gt_as_proposals', False):
                raise BuildError('a dense head samples anchors: set add_gt_as_proposals=False in its sampler',
                                 train_cfg, key_path=['train_cfg', 'sampler', 'add_gt_as_proposals'])
        if loss_normalizer_momentum is not None and not 0 <= loss_normalizer_momentum < 1:
            raise BuildError(f'loss_normalizer_momentum must be in [0, 1), got {loss_normalizer_momentum}',
                             key_path=['loss_normalizer_momentum'])
        self.loss_normalizer_momentum = loss_normalizer_momentum
        if loss_normalization not in ('batch', 'per_image'):
            raise BuildError(f"loss_normalization must be 'batch' or 'per_image', got {loss_normalization!r}",
                             key_path=['loss_normalization'])
        if loss_normalization == 'per_image' and (loss_normalizer_momentum is not None or self.sampling):
            raise BuildError("loss_normalization='per_image' divides by each image's positives: it takes "
                             'no loss_normalizer_momentum and no sampled loss (FocalLoss-like losses only)',
                             key_path=['loss_normalization'])
        self.loss_normalization = loss_normalization
        self.register_buffer('loss_normalizer', torch.tensor(float(loss_normalizer_init)), persistent=False)
        self._init_layers()

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _build(registry, cfg, *keys):
        try:
            return registry.build(cfg)
        except BuildError as e:
            raise e.prefix(*keys)

    @staticmethod
    def _legacy_keys(anchor_generator, bbox_coder, anchor_scales, anchor_ratios, anchor_strides,
                     anchor_base_sizes, octave_base_scale, scales_per_octave, target_means, target_stds):
        anchor_keys = dict(scales=anchor_scales, ratios=anchor_ratios, strides=anchor_strides,
                           base_sizes=anchor_base_sizes, octave_base_scale=octave_base_scale,
                           scales_per_octave=scales_per_octave)
        given = {k: v for k, v in anchor_keys.items() if v is not None}
        if given:
            old = {'scales': 'anchor_scales', 'ratios': 'anchor_ratios', 'strides': 'anchor_strides',
                   'base_sizes': 'anchor_base_sizes'}
            warnings.warn(
                f'head keys {", ".join(old.get(k, k) for k in given)} are deprecated (MMDetection 1.x); '
                f'write anchor_generator=dict(type="AnchorGenerator", '
                + ', '.join(f'{k}={v!r}' for k, v in given.items()) + ')', DeprecationWarning, stacklevel=4)
            anchor_generator = dict(anchor_generator)
            if 'octave_base_scale' in given or 'scales' in given:  # replace the scale spec wholesale
                for k in ('scales', 'octave_base_scale', 'scales_per_octave'):
                    anchor_generator.pop(k, None)
            anchor_generator.update(given)
        if target_means is not None or target_stds is not None:
            warnings.warn('head keys target_means/target_stds are deprecated (MMDetection 1.x); write '
                          f'bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means={target_means!r}, '
                          f'target_stds={target_stds!r})', DeprecationWarning, stacklevel=4)
            bbox_coder = dict(bbox_coder)
            if target_means is not None:
                bbox_coder['target_means'] = list(target_means)
            if target_stds is not None:
                bbox_coder['target_stds'] = list(target_stds)
        return anchor_generator, bbox_coder

    def _init_layers(self) -> None:
        self.conv_cls = nn.Conv2d(self.in_channels, self.num_anchors * self.cls_out_channels, 1)
        self.conv_reg = nn.Conv2d(self.in_channels, self.num_anchors * 4, 1)
        for conv in (self.conv_cls, self.conv_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def init_weights(self) -> None:
        pass  # layers are initialised when built

    # ------------------------------------------------------------------ forward
    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` → scores ``(B, A * cls_out, H, W)`` and deltas ``(B, A * 4, H, W)``."""
        return self.conv_cls(x), self.conv_reg(x)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        cls_scores, bbox_preds = [], []
        for x in feats:
            cls_score, bbox_pred = self.forward_single(x)
            cls_scores.append(cls_score)
            bbox_preds.append(bbox_pred)
        return cls_scores, bbox_preds

    def forward_train(self, x, img_metas, gt_bboxes, gt_labels=None, gt_bboxes_ignore=None,
                      proposal_cfg=None, **kwargs):
        """Losses (and, with ``proposal_cfg``, the detections of this head as proposals)."""
        outs = self(x)
        losses = self.loss(*outs, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore=gt_bboxes_ignore)
        if proposal_cfg is None:
            return losses
        with torch.no_grad():
            proposal_list = self.get_bboxes(*outs, img_metas=img_metas, cfg=proposal_cfg)
        return losses, proposal_list

    def simple_test(self, feats, img_metas, rescale: bool = False):
        """Detections per image: ``(det_bboxes (n, 5), det_labels (n,))``."""
        return self.get_bboxes(*self(feats), img_metas=img_metas, rescale=rescale)

    # ------------------------------------------------------------------ targets
    @staticmethod
    def _flatten(maps: Sequence[Tensor], channels: int) -> Tensor:
        """Per-level ``(B, A * channels, H, W)`` → ``(B, sum H * W * A, channels)`` in the anchors'
        order (position-major)."""
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.size(0), -1, channels) for m in maps], dim=1)

    def get_anchors(self, featmap_sizes, img_metas, device='cpu', dtype=torch.float32):
        """Anchors of the batch ``(N, 4)`` (the same for every image) and valid flags ``(B, N)``.

        Both are cached by feature-map sizes (and pad shapes): a fixed input size builds them once.
        """
        sizes = tuple(tuple(int(v) for v in s) for s in featmap_sizes)
        pad_shapes = tuple(tuple(meta.get('pad_shape', meta['img_shape'])[:2]) for meta in img_metas)
        batch_shape = padded_batch_shape(img_metas)
        key = (sizes, pad_shapes, batch_shape, str(device), dtype)
        cache = self.__dict__.setdefault('_anchor_cache', {})
        if key not in cache:
            if len(cache) > 32:
                cache.clear()
            anchors = torch.cat(self.anchor_generator.grid_priors(sizes, dtype, device, batch_shape))
            valid = torch.stack([torch.cat(self.anchor_generator.valid_flags(sizes, pad, device))
                                 for pad in pad_shapes])
            cache[key] = (anchors, valid)
        return cache[key]

    def get_targets(self, anchors: Tensor, valid_flags: Tensor, gt_bboxes_list: Sequence[Tensor],
                    img_metas: Sequence[dict], gt_bboxes_ignore_list=None, gt_labels_list=None):
        """Classification and regression targets of every anchor of every image, the whole
        batch at once (no loop over images unless the sampler draws at random).

        Args:
            anchors: ``(N, 4)`` anchors shared by the batch.
            valid_flags: ``(B, N)`` bool.
            gt_bboxes_list: per image ``(k_i, 4)``; ``gt_labels_list`` per image ``(k_i,)``
                (None: every object is class 0, as for RPN).

        Returns:
            dict with ``labels (B, N)`` long (``num_classes`` = background),
            ``label_weights (B, N)``, ``bbox_targets (B, N, 4)``, ``bbox_weights (B, N, 4)``,
            ``num_pos`` and ``num_neg`` (tensors: the sum over images of ``max(n_i, 1)`` and the
            number of negatives).
        """
        B, N = valid_flags.shape
        allowed_border = _cfg_get(self.train_cfg, 'allowed_border', -1)
        pos_weight = _cfg_get(self.train_cfg, 'pos_weight', -1)
        inside = valid_flags
        if allowed_border >= 0:
            img_h, img_w = anchors.new_tensor([meta['img_shape'][:2] for meta in img_metas]).T[..., None]
            inside = inside & (anchors[:, 0] >= -allowed_border) & (anchors[:, 1] >= -allowed_border) \
                & (anchors[:, 2] < img_w + allowed_border) & (anchors[:, 3] < img_h + allowed_border)
        gt_bboxes_list = [gt.to(anchors.dtype) for gt in gt_bboxes_list]
        gt_inds, max_overlaps = assign_batch(self.assigner, anchors, inside, gt_bboxes_list, gt_bboxes_ignore_list)
        pos, neg = sample_batch(self.sampler, gt_inds, max_overlaps, anchors, gt_bboxes_list, gt_labels_list)

        matched_gts = gather_assigned(gt_bboxes_list, gt_inds, fill=1.)  # (B, N, 4)
        matched_labels = torch.zeros_like(gt_inds) if gt_labels_list is None else \
            gather_assigned([l.to(torch.long) for l in gt_labels_list], gt_inds)
        targets = matched_gts if self.reg_decoded_bbox else \
            self.bbox_coder.encode(anchors[None].expand(B, N, 4), matched_gts)

        labels = torch.where(pos, matched_labels, self.num_classes)
        label_weights = pos * (1.0 if pos_weight <= 0 else float(pos_weight)) + neg.to(anchors.dtype)
        bbox_targets = torch.where(pos[..., None], targets, 0.)
        bbox_weights = pos[..., None].expand(B, N, 4).to(anchors.dtype)
        num_pos_per_image = pos.sum(dim=1).clamp(min=1).to(anchors.dtype)
        num_pos = num_pos_per_image.sum()
        num_neg = (neg.sum(dim=1).clamp(min=1) if self.sampling else neg.sum(dim=1)).sum().to(anchors.dtype)
        return dict(labels=labels, label_weights=label_weights, bbox_targets=bbox_targets,
                    bbox_weights=bbox_weights, num_pos=num_pos, num_neg=num_neg,
                    num_pos_per_image=num_pos_per_image)

    # ------------------------------------------------------------------ losses
    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], gt_bboxes: list[Tensor],
             gt_labels: list[Tensor] | None, img_metas: list[dict], gt_bboxes_ignore=None) -> dict:
        """``loss_cls`` and ``loss_bbox`` over all anchors of all images, each normalised by the
        number of positives (sum over images of ``max(n_i, 1)``; plus negatives when sampling),
        or by its moving average with ``loss_normalizer_momentum``.

        Computed in float32 whatever the autocast dtype of the head's outputs (MMDetection's
        ``force_fp32``): anchors, targets and the loss sums need the precision."""
        cls_scores, bbox_preds = _float32(cls_scores), _float32(bbox_preds)
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        anchors, valid = self.get_anchors(featmap_sizes, img_metas, cls_scores[0].device, cls_scores[0].dtype)
        with torch.no_grad():
            t = self.get_targets(anchors, valid, gt_bboxes, img_metas, gt_bboxes_ignore, gt_labels)
        avg_factor = t['num_pos'] + t['num_neg'] if self.sampling else t['num_pos']
        if self.loss_normalizer_momentum is not None:
            m = self.loss_normalizer_momentum
            if self.training:
                self.loss_normalizer = m * self.loss_normalizer + (1 - m) * avg_factor.detach()
            avg_factor = self.loss_normalizer
        label_weights, bbox_weights = t['label_weights'], t['bbox_weights']
        if self.loss_normalization == 'per_image':
            # torchvision: mean over images of (image's sum / image's positives); as weights
            # 1 / (B * n_i) on the image's anchors and an avg_factor of 1
            image_factor = 1.0 / (t['num_pos_per_image'] * len(img_metas))   # (B,)
            label_weights = label_weights * image_factor[:, None]
            bbox_weights = bbox_weights * image_factor[:, None, None]
            avg_factor = avg_factor.new_ones(())

        cls_score = self._flatten(cls_scores, self.cls_out_channels).reshape(-1, self.cls_out_channels)
        bbox_pred = self._flatten(bbox_preds, 4)  # (B, N, 4)
        loss_cls = self.loss_cls(cls_score, t['labels'].reshape(-1), label_weights.reshape(-1),
                                 avg_factor=avg_factor)
        if self.reg_decoded_bbox:
            bbox_pred = self.bbox_coder.decode(anchors[None].expand_as(bbox_pred), bbox_pred)
        loss_bbox = self.loss_bbox(bbox_pred.reshape(-1, 4), t['bbox_targets'].reshape(-1, 4),
                                   bbox_weights.reshape(-1, 4), avg_factor=avg_factor)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    # ------------------------------------------------------------------ inference
    def get_bboxes(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], score_factors=None,
                   img_metas: list[dict] | None = None, cfg=None, rescale: bool = False,
                   with_nms: bool = True) -> list[tuple[Tensor, Tensor]]:
        """Per image ``(det_bboxes (n, 5) [x1, y1, x2, y2, score], det_labels (n,))``; boxes in
        the input image's pixels, or the original image's with ``rescale``."""
        cfg = self.test_cfg if cfg is None else cfg
        cls_scores, bbox_preds = _float32(cls_scores), _float32(bbox_preds)
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        mlvl_anchors = self.anchor_generator.grid_priors(featmap_sizes, cls_scores[0].dtype,
                                                         cls_scores[0].device,
                                                         padded_batch_shape(img_metas))
        results = []
        for i, meta in enumerate(img_metas):
            results.append(self._get_bboxes_single([s[i].detach() for s in cls_scores],
                                                   [b[i].detach() for b in bbox_preds],
                                                   mlvl_anchors, meta, cfg, rescale, with_nms))
        return results

    def _get_bboxes_single(self, cls_score_list, bbox_pred_list, mlvl_anchors, img_meta, cfg,
                           rescale=False, with_nms=True):
        """One image. ``cls_score_list``: per level ``(A * cls_out, H, W)``; returns
        ``(det_bboxes, det_labels)``, or ``(boxes, scores, labels)`` before NMS if not with_nms."""
        nms_pre = _cfg_get(cfg, 'nms_pre', -1)
        score_thr = _cfg_get(cfg, 'score_thr', 0.0)
        img_shape = img_meta['img_shape']
        all_boxes, all_scores, all_labels = [], [], []
        for cls_score, bbox_pred, anchors in zip(cls_score_list, bbox_pred_list, mlvl_anchors):
            cls_score = cls_score.permute(1, 2, 0).reshape(-1, self.cls_out_channels)
            scores = cls_score.sigmoid() if self.use_sigmoid_cls else cls_score.softmax(-1)[:, :-1]
            bbox_pred = bbox_pred.permute(1, 2, 0).reshape(-1, 4)
            # the candidates are (anchor, class) pairs: threshold, then keep the nms_pre best
            flat = scores.reshape(-1)
            keep = torch.nonzero(flat > score_thr, as_tuple=False).squeeze(-1)
            flat = flat[keep]
            if 0 < nms_pre < flat.numel():
                flat, top = flat.topk(nms_pre)
                keep = keep[top]
            anchor_idx = keep // scores.size(1)
            labels = keep % scores.size(1)
            boxes = self.bbox_coder.decode(anchors[anchor_idx], bbox_pred[anchor_idx], max_shape=img_shape)
            all_boxes.append(boxes)
            all_scores.append(flat)
            all_labels.append(labels)
        boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        if rescale:
            boxes = boxes / boxes.new_tensor(_scale_factor(img_meta))
        if not with_nms:
            return boxes, scores, labels
        return self._nms(boxes, scores, labels, cfg)

    @staticmethod
    def _nms(boxes, scores, labels, cfg):
        _, iou_threshold = get_nms_cfg(cfg)
        max_per_img = _cfg_get(cfg, 'max_per_img', 100)
        keep = batched_nms(boxes, scores, labels, iou_threshold)
        if max_per_img > 0:
            keep = keep[:max_per_img]
        return torch.cat([boxes[keep], scores[keep, None]], dim=-1), labels[keep]

    def aug_test(self, feats_list, img_metas_list, rescale: bool = False):
        """Test-time augmentation for one image: detections of every augmentation (flips,
        scales) are mapped back to the original image, then merged by one NMS."""
        boxes, scores, labels = [], [], []
        for feats, img_metas in zip(feats_list, img_metas_list):
            meta = img_metas[0]
            b, s, l = self.get_bboxes(*self(feats), img_metas=[meta], rescale=False, with_nms=False)[0]
            b = bbox_mapping_back(b, meta['img_shape'], _scale_factor(meta), meta.get('flip', False),
                                  meta.get('flip_direction', 'horizontal'))
            boxes.append(b)
            scores.append(s)
            labels.append(l)
        det_bboxes, det_labels = self._nms(torch.cat(boxes), torch.cat(scores), torch.cat(labels), self.test_cfg)
        if not rescale:  # back to the scale of the first augmentation
            det_bboxes[:, :4] *= det_bboxes.new_tensor(_scale_factor(img_metas_list[0][0]))
        return [(det_bboxes, det_labels)]


def _scale_factor(meta) -> np.ndarray:
    sf = np.asarray(meta.get('scale_factor', 1.0), dtype=np.float32).reshape(-1)
    return np.repeat(sf, 4) if sf.size == 1 else sf


def _float32(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The head's outputs in float32 (they are bf16/fp16 under autocast)."""
    return [t.float() for t in tensors]
