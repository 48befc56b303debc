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

from typing import Sequence

import torch
from torch import Tensor, nn

from detforge.registry import BBOX_CODERS, HEADS, LOSSES, PRIOR_GENERATORS, BuildError
from detforge.models.postprocess import dense_post_process, nms_from_cfg, scale_factor_of, select_candidates
from detforge.models.task_modules import PseudoSampler, padded_batch_shape
from detforge.models.train_test_cfg import DenseTestConfig, DenseTrainConfig
from detforge.structures import bbox_mapping_back

from .legacy_keys import translate_1x_head_keys
from .dense_targets import (DenseTargets, compute_dense_targets, flatten_levels, inside_flags,
                            moving_average_normalizer)

__all__ = ['AnchorHead']

_NO_SAMPLING_LOSSES = ('FocalLoss', 'GHMC', 'QualityFocalLoss')


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
        train_cfg: a :class:`DenseTrainConfig` or its dict: ``assigner``, ``sampler``
            (default PseudoSampler), ``allowed_border`` (anchors reaching further outside the
            image are not used; ``-1`` keeps all), ``pos_weight`` (``<= 0``: 1).
        test_cfg: a :class:`DenseTestConfig` or its dict: ``nms_pre``, ``score_thr``,
            ``nms=dict(type='nms' | 'soft_nms', iou_threshold=...)``, ``max_per_img``,
            ``min_bbox_size``.

    A subclass changes the layers by overriding ``_init_layers`` and ``forward_single``
    (MMDetection 2.x's way); targets, losses and post-processing stay shared
    (:mod:`.dense_targets`, :mod:`detforge.models.postprocess`).
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
        anchor_generator, bbox_coder = translate_1x_head_keys(
            anchor_generator, bbox_coder, anchor_scales, anchor_ratios, anchor_strides,
            anchor_base_sizes, octave_base_scale, scales_per_octave, target_means, target_stds)
        if num_classes <= 0:
            raise BuildError(f'num_classes must be positive, got {num_classes}', key_path=['num_classes'])
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.reg_decoded_bbox = reg_decoded_bbox
        self.bbox_coder = self._build(BBOX_CODERS, bbox_coder, 'bbox_coder')
        self.loss_cls = self._build(LOSSES, loss_cls, 'loss_cls')
        # read from the config, or from the loss when a built one is given
        cls_cfg = loss_cls if isinstance(loss_cls, dict) else \
            dict(type=type(self.loss_cls).__name__, use_sigmoid=getattr(self.loss_cls, 'use_sigmoid', False))
        self.use_sigmoid_cls = cls_cfg.get('use_sigmoid', False)
        self.cls_out_channels = num_classes if self.use_sigmoid_cls else num_classes + 1
        self.sampling = cls_cfg.get('type') not in _NO_SAMPLING_LOSSES
        self.loss_bbox = self._build(LOSSES, loss_bbox, 'loss_bbox')
        self.anchor_generator = self._build(PRIOR_GENERATORS, anchor_generator, 'anchor_generator')
        self.prior_generator = self.anchor_generator
        self.num_anchors = self.anchor_generator.num_base_anchors[0]
        if len(set(self.anchor_generator.num_base_anchors)) != 1:
            raise BuildError('every level must have the same number of anchors per position',
                             key_path=['anchor_generator'])
        self.train_cfg = self.parse_train_cfg(train_cfg)
        self.test_cfg = self.parse_test_cfg(test_cfg)
        self.init_cfg = init_cfg
        if self.train_cfg is not None:
            self.assigner, self.sampler = self._assigner_sampler(self.train_cfg, self.sampling)
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
        self._loss_normalizer_init = float(loss_normalizer_init)
        # the moving average changes during training: saved in checkpoints (when used) so
        # that a resumed run continues it exactly
        self.register_buffer('loss_normalizer', torch.tensor(float(loss_normalizer_init)),
                             persistent=loss_normalizer_momentum is not None)
        self._init_layers()

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse_train_cfg(cls, cfg, path=('train_cfg',)) -> DenseTrainConfig | None:
        """The typed record of a ``train_cfg`` dict (see :class:`DenseTrainConfig`)."""
        return DenseTrainConfig.parse(cfg, path)

    @classmethod
    def parse_test_cfg(cls, cfg, path=('test_cfg',)) -> DenseTestConfig | None:
        """The typed record of a ``test_cfg`` dict (see :class:`DenseTestConfig`)."""
        return DenseTestConfig.parse(cfg, path)

    @staticmethod
    def _assigner_sampler(train_cfg: DenseTrainConfig, sampling: bool):
        """The assigner and sampler of a dense head (a PseudoSampler unless the loss samples
        and the config names a sampler)."""
        if train_cfg.assigner is None:
            raise BuildError('train_cfg needs an assigner, e.g. dict(type="MaxIoUAssigner", ...)',
                             key_path=['train_cfg'])
        sampler = train_cfg.sampler if sampling and train_cfg.sampler is not None else PseudoSampler()
        if getattr(sampler, 'add_gt_as_proposals', False):  # a gt has no prior slot
            raise BuildError('a dense head samples anchors: set add_gt_as_proposals=False in its sampler',
                             key_path=['train_cfg', 'sampler', 'add_gt_as_proposals'])
        return train_cfg.assigner, sampler

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # checkpoints written before the normaliser was saved: start it from its initial value
        key = prefix + 'loss_normalizer'
        if self.loss_normalizer_momentum is not None and key not in state_dict:
            state_dict[key] = torch.tensor(self._loss_normalizer_init)
        elif self.loss_normalizer_momentum is None:
            state_dict.pop(key, None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @staticmethod
    def _build(registry, cfg, *keys):
        """A part from its config dict, or the part itself when given built."""
        if not isinstance(cfg, dict):
            return cfg
        try:
            return registry.build(cfg)
        except BuildError as e:
            raise e.prefix(*keys)

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
        """See :func:`flatten_levels`."""
        return flatten_levels(maps, channels)

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
                    img_metas: Sequence[dict], gt_bboxes_ignore_list=None,
                    gt_labels_list=None) -> DenseTargets:
        """Targets of every anchor of every image, the whole batch at once (see
        :func:`compute_dense_targets`).

        Args:
            anchors: ``(N, 4)`` anchors shared by the batch.
            valid_flags: ``(B, N)`` bool.
            gt_bboxes_list: per image ``(k_i, 4)``; ``gt_labels_list`` per image ``(k_i,)``
                (None: every object is class 0, as for RPN).

        Returns:
            :class:`DenseTargets` (``labels (B, N)``, ``label_weights (B, N)``,
            ``bbox_targets (B, N, 4)``, ``bbox_weights (B, N, 4)``, ``pos``, ``neg``).
        """
        inside = inside_flags(anchors, valid_flags, [m['img_shape'] for m in img_metas],
                              self.train_cfg.allowed_border)
        return compute_dense_targets(anchors, inside, gt_bboxes_list, gt_labels_list, self.assigner,
                             self.sampler, self.num_classes,
                             None if self.reg_decoded_bbox else self.bbox_coder.encode,
                             self.train_cfg.pos_weight, gt_bboxes_ignore_list)

    # ------------------------------------------------------------------ losses
    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], gt_bboxes: list[Tensor],
             gt_labels: list[Tensor] | None, img_metas: list[dict], gt_bboxes_ignore=None) -> dict:
        """``loss_cls`` and ``loss_bbox`` over all anchors of all images, each normalised by the
        number of positives (sum over images of ``max(n_i, 1)``; plus negatives when sampling),
        or by its moving average with ``loss_normalizer_momentum``.

        Args:
            cls_scores: per level ``(B, A * cls_out, H, W)`` logits.
            bbox_preds: per level ``(B, A * 4, H, W)`` deltas.
            gt_bboxes: per image ``(k_i, 4)`` xyxy px; gt_labels: per image ``(k_i,)``.
            img_metas: per image, ``img_shape`` and ``pad_shape``.
            gt_bboxes_ignore: per image ``(m_i, 4)`` or None.

        Returns:
            ``dict(loss_cls, loss_bbox)``, scalar tensors.

        Computed in float32 whatever the autocast dtype of the head's outputs (MMDetection's
        ``force_fp32``): anchors, targets and the loss sums need the precision."""
        cls_scores, bbox_preds = _float32(cls_scores), _float32(bbox_preds)
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        anchors, valid = self.get_anchors(featmap_sizes, img_metas, cls_scores[0].device, cls_scores[0].dtype)
        with torch.no_grad():
            t = self.get_targets(anchors, valid, gt_bboxes, img_metas, gt_bboxes_ignore, gt_labels)
        avg_factor = t.num_pos_per_image_clamped()
        if self.sampling:
            avg_factor = avg_factor + t.num_neg_per_image_clamped()
        if self.loss_normalizer_momentum is not None:
            avg_factor = moving_average_normalizer(self.loss_normalizer, avg_factor,
                                                   self.loss_normalizer_momentum, self.training)
        label_weights, bbox_weights = t.label_weights, t.bbox_weights
        if self.loss_normalization == 'per_image':
            # torchvision: mean over images of (image's sum / image's positives); as weights
            # 1 / (B * n_i) on the image's anchors and an avg_factor of 1
            image_factor = 1.0 / (t.num_pos_per_image() * len(img_metas))   # (B,)
            label_weights = label_weights * image_factor[:, None]
            bbox_weights = bbox_weights * image_factor[:, None, None]
            avg_factor = avg_factor.new_ones(())

        cls_score = flatten_levels(cls_scores, self.cls_out_channels).reshape(-1, self.cls_out_channels)
        bbox_pred = flatten_levels(bbox_preds, 4)  # (B, N, 4)
        loss_cls = self.loss_cls(cls_score, t.labels.reshape(-1), label_weights.reshape(-1),
                                 avg_factor=avg_factor)
        if self.reg_decoded_bbox:
            bbox_pred = self.bbox_coder.decode(anchors[None].expand_as(bbox_pred), bbox_pred)
        loss_bbox = self.loss_bbox(bbox_pred.reshape(-1, 4), t.bbox_targets.reshape(-1, 4),
                                   bbox_weights.reshape(-1, 4), avg_factor=avg_factor)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    # ------------------------------------------------------------------ inference
    def get_bboxes(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], score_factors=None,
                   img_metas: list[dict] | None = None, cfg=None, rescale: bool = False,
                   with_nms: bool = True) -> list[tuple[Tensor, Tensor]]:
        """Detections of a batch.

        Args:
            cls_scores: per level ``(B, A * cls_out, H, W)`` logits.
            bbox_preds: per level ``(B, A * 4, H, W)`` deltas.
            img_metas: per image, ``img_shape`` (boxes are clipped to it) and
                ``scale_factor`` (with ``rescale``).
            cfg: a :class:`DenseTestConfig` (or its dict); default ``self.test_cfg``.
            rescale: boxes in the original image's pixels instead of the input's.
            with_nms: False returns ``(boxes (n, 4), scores (n,), labels (n,))`` per image,
                before NMS (test-time augmentation merges those).

        Returns:
            per image ``(det_bboxes (n, 5) [x1, y1, x2, y2, score], det_labels (n,))``.
        """
        cfg = self.test_cfg if cfg is None else self.parse_test_cfg(cfg)
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

    def _get_bboxes_single(self, cls_score_list, bbox_pred_list, mlvl_anchors, img_meta,
                           cfg: DenseTestConfig, rescale=False, with_nms=True):
        """One image: per level the ``nms_pre`` best (anchor, class) pairs above
        ``score_thr``, decoded and clipped; then :func:`dense_post_process`.

        Args:
            cls_score_list: per level ``(A * cls_out, H, W)``; bbox_pred_list: per level
                ``(A * 4, H, W)``; mlvl_anchors: per level ``(H * W * A, 4)``.

        Returns:
            ``(det_bboxes (n, 5), det_labels (n,))``, or ``(boxes, scores, labels)`` before
            NMS when not ``with_nms``.
        """
        img_shape = img_meta['img_shape']
        all_boxes, all_scores, all_labels = [], [], []
        for cls_score, bbox_pred, anchors in zip(cls_score_list, bbox_pred_list, mlvl_anchors):
            cls_score = cls_score.permute(1, 2, 0).reshape(-1, self.cls_out_channels)
            scores = cls_score.sigmoid() if self.use_sigmoid_cls else cls_score.softmax(-1)[:, :-1]
            bbox_pred = bbox_pred.permute(1, 2, 0).reshape(-1, 4)
            # the candidates are (anchor, class) pairs: threshold, then keep the nms_pre best
            flat, anchor_idx, labels = select_candidates(scores, cfg.score_thr, cfg.nms_pre)
            boxes = self.bbox_coder.decode(anchors[anchor_idx], bbox_pred[anchor_idx], max_shape=img_shape)
            all_boxes.append(boxes)
            all_scores.append(flat)
            all_labels.append(labels)
        return dense_post_process(torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels),
                                  cfg, img_meta, rescale, with_nms)

    @staticmethod
    def _nms(boxes, scores, labels, cfg: DenseTestConfig):
        """``nms_from_cfg`` with ``cfg.nms`` and ``cfg.max_per_img`` → ``(dets (n, 5), labels (n,))``."""
        if cfg.nms is None:
            raise BuildError("test_cfg needs nms=dict(type='nms', iou_threshold=...)", key_path=['test_cfg'])
        dets, keep = nms_from_cfg(boxes, scores, labels, cfg.nms, cfg.max_per_img)
        return dets, labels[keep]

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


_scale_factor = scale_factor_of


def _float32(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The head's outputs in float32 (they are bf16/fp16 under autocast)."""
    return [t.float() for t in tensors]
