"""Anchor-based dense head: per-anchor classification and box regression.

Training (:meth:`AnchorHead.loss`, the whole batch at once, :mod:`.dense_targets`): anchors
─► valid flags ─► assign ─► sample ─► encode targets ─► normaliser ─► losses. Inference
(:meth:`AnchorHead.get_bboxes`, :func:`~detforge.models.postprocess.anchor_detections`): per
level the ``nms_pre`` best scores above ``score_thr`` ─► decode ─► NMS ─► ``max_per_img``.
Test-time augmentation: :class:`.DenseTestMixin`; MMDetection 1.x keys: :mod:`.legacy_keys`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from detforge.registry import BBOX_CODERS, HEADS, LOSSES, PRIOR_GENERATORS, BuildError
from detforge.models.postprocess import anchor_detections
from detforge.models.task_modules import padded_batch_shape
from detforge.models.train_test_cfg import DenseTestConfig, DenseTrainConfig, build_part

from .dense_targets import (DenseTargets, batch_anchors, check_loss_normalization,
                            compute_dense_targets, dense_assigner_sampler, dense_losses,
                            inside_flags, normalize_targets)
from .dense_test_mixins import DenseTestMixin
from .legacy_keys import translate_1x_head_keys

__all__ = ['AnchorHead']

_NO_SAMPLING_LOSSES = ('FocalLoss', 'GHMC', 'QualityFocalLoss')


@HEADS.register_module()
class AnchorHead(DenseTestMixin, nn.Module):
    """A head that classifies and regresses a fixed set of anchors on every feature level.

    Args:
        num_classes: object classes (no background).
        in_channels: channels of the input features.
        feat_channels: channels of the hidden convs (in subclasses).
        anchor_generator, bbox_coder, loss_cls, loss_bbox: configs (or built parts).
        reg_decoded_bbox: regress decoded boxes (needed by IoU/GIoU losses) instead of deltas.
        loss_normalizer_momentum: Detectron2's normaliser: divide the losses by a moving average
            (this momentum, starting at ``loss_normalizer_init``) of the number of positives
            instead of the current number. ``None`` (default) uses the current number.
        loss_normalization: ``'batch'`` (MMDetection, default) or ``'per_image'``
            (torchvision's RetinaNet); see :func:`normalize_targets`. Same at batch 1.
        train_cfg: a :class:`DenseTrainConfig` or its dict: ``assigner``, ``sampler``
            (default PseudoSampler), ``allowed_border`` (``-1`` keeps all anchors),
            ``pos_weight`` (``<= 0``: 1).
        test_cfg: a :class:`DenseTestConfig` or its dict: ``nms_pre``, ``score_thr``,
            ``nms=dict(type='nms' | 'soft_nms', iou_threshold=...)``, ``max_per_img``,
            ``min_bbox_size``.
        anchor_scales, anchor_ratios, anchor_strides, anchor_base_sizes, octave_base_scale,
        scales_per_octave, target_means, target_stds: MMDetection 1.x keys, accepted with a
            DeprecationWarning and turned into ``anchor_generator`` / ``bbox_coder``.

    A subclass changes the layers by overriding ``_init_layers`` (called at the end of
    ``__init__``, when every attribute above is set) and ``forward_single`` (MMDetection
    2.x's way, as :class:`RetinaHead`); targets, losses and post-processing stay shared.
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
        self.num_classes, self.in_channels, self.feat_channels = num_classes, in_channels, feat_channels
        self.reg_decoded_bbox = reg_decoded_bbox
        self.bbox_coder = build_part(BBOX_CODERS, bbox_coder, ['bbox_coder'])
        self.loss_cls = build_part(LOSSES, loss_cls, ['loss_cls'])
        self.loss_bbox = build_part(LOSSES, loss_bbox, ['loss_bbox'])
        # read from the config, or from the loss when a built one is given
        self.use_sigmoid_cls = loss_cls.get('use_sigmoid', False) if isinstance(loss_cls, dict) \
            else getattr(self.loss_cls, 'use_sigmoid', False)
        self.cls_out_channels = num_classes if self.use_sigmoid_cls else num_classes + 1
        loss_type = loss_cls.get('type') if isinstance(loss_cls, dict) else type(self.loss_cls).__name__
        self.sampling = loss_type not in _NO_SAMPLING_LOSSES
        self.anchor_generator = build_part(PRIOR_GENERATORS, anchor_generator, ['anchor_generator'])
        self.prior_generator = self.anchor_generator
        self.num_anchors = self.anchor_generator.num_base_anchors[0]
        if len(set(self.anchor_generator.num_base_anchors)) != 1:
            raise BuildError('every level must have the same number of anchors per position',
                             key_path=['anchor_generator'])
        self.train_cfg = self.parse_train_cfg(train_cfg)
        self.test_cfg = self.parse_test_cfg(test_cfg)
        self.init_cfg = init_cfg
        if self.train_cfg is not None:
            self.assigner, self.sampler = dense_assigner_sampler(self.train_cfg, self.sampling)
        check_loss_normalization(loss_normalization, loss_normalizer_momentum, self.sampling)
        self.loss_normalization = loss_normalization
        self.loss_normalizer_momentum = loss_normalizer_momentum
        self._loss_normalizer_init = float(loss_normalizer_init)
        # the moving average changes during training: saved in checkpoints (when used) so
        # that a resumed run continues it exactly
        self.register_buffer('loss_normalizer', torch.tensor(float(loss_normalizer_init)),
                             persistent=loss_normalizer_momentum is not None)
        self._init_layers()

    @classmethod
    def parse_train_cfg(cls, cfg, path=('train_cfg',)) -> DenseTrainConfig | None:
        """The typed record of a ``train_cfg`` dict (see :class:`DenseTrainConfig`)."""
        return DenseTrainConfig.parse(cfg, path)

    @classmethod
    def parse_test_cfg(cls, cfg, path=('test_cfg',)) -> DenseTestConfig | None:
        """The typed record of a ``test_cfg`` dict (see :class:`DenseTestConfig`)."""
        return DenseTestConfig.parse(cfg, path)

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

    # ------------------------------------------------------------------ layers
    def _init_layers(self) -> None:
        """The predictors: a 1x1 conv for ``A * cls_out`` logits and one for ``A * 4`` deltas."""
        self.conv_cls = nn.Conv2d(self.in_channels, self.num_anchors * self.cls_out_channels, 1)
        self.conv_reg = nn.Conv2d(self.in_channels, self.num_anchors * 4, 1)
        for conv in (self.conv_cls, self.conv_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def init_weights(self) -> None:
        pass  # layers are initialised when built

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` → scores ``(B, A * cls_out, H, W)`` and deltas ``(B, A * 4, H, W)``."""
        return self.conv_cls(x), self.conv_reg(x)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level :meth:`forward_single`, grouped: ``(cls_scores, bbox_preds)``."""
        outs = [self.forward_single(x) for x in feats]
        return [o[0] for o in outs], [o[1] for o in outs]

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

    # ------------------------------------------------------------------ training
    def get_anchors(self, featmap_sizes, img_metas, device='cpu', dtype=torch.float32):
        """Anchors ``(N, 4)`` (the same for every image) and valid flags ``(B, N)``, cached by
        feature-map sizes and pad shapes (see :func:`batch_anchors`)."""
        return batch_anchors(self.anchor_generator, featmap_sizes, img_metas, device, dtype,
                             cache=self.__dict__.setdefault('_anchor_cache', {}))

    def get_targets(self, anchors: Tensor, valid_flags: Tensor, gt_bboxes_list: Sequence[Tensor],
                    img_metas: Sequence[dict], gt_bboxes_ignore_list=None,
                    gt_labels_list=None) -> DenseTargets:
        """Targets of every anchor ``(N, 4)`` with ``valid_flags (B, N)`` of every image: the
        anchors within ``allowed_border`` of the image, then :func:`compute_dense_targets`
        (``gt_labels_list`` None: every object is class 0, as for RPN)."""
        inside = inside_flags(anchors, valid_flags, [m['img_shape'] for m in img_metas],
                              self.train_cfg.allowed_border)
        return compute_dense_targets(anchors, inside, gt_bboxes_list, gt_labels_list, self.assigner,
                                     self.sampler, self.num_classes,
                                     None if self.reg_decoded_bbox else self.bbox_coder.encode,
                                     self.train_cfg.pos_weight, gt_bboxes_ignore_list)

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], gt_bboxes: list[Tensor],
             gt_labels: list[Tensor] | None, img_metas: list[dict], gt_bboxes_ignore=None) -> dict:
        """``loss_cls`` and ``loss_bbox`` over all anchors of all images, normalised as
        ``loss_normalization`` says (MMDetection: by the positives, plus the negatives when
        sampling; or their moving average with ``loss_normalizer_momentum``).

        Args:
            cls_scores: per level ``(B, A * cls_out, H, W)``; bbox_preds: ``(B, A * 4, H, W)``.
            gt_bboxes: per image ``(k_i, 4)`` xyxy px; gt_labels: per image ``(k_i,)``.
            img_metas: per image ``img_shape``, ``pad_shape``.
            gt_bboxes_ignore: per image ``(m_i, 4)`` or None.

        Returns:
            ``dict(loss_cls, loss_bbox)``, scalar tensors, computed in float32 whatever the
            autocast dtype of the outputs (MMDetection's ``force_fp32``).
        """
        cls_scores, bbox_preds = _float32(cls_scores), _float32(bbox_preds)
        anchors, valid = self.get_anchors([s.shape[-2:] for s in cls_scores], img_metas,
                                          cls_scores[0].device, cls_scores[0].dtype)
        with torch.no_grad():
            t = self.get_targets(anchors, valid, gt_bboxes, img_metas, gt_bboxes_ignore, gt_labels)
        t, avg_factor = normalize_targets(t, self.sampling, self.loss_normalization,
                                          self.loss_normalizer, self.loss_normalizer_momentum,
                                          self.training)
        loss_cls, loss_bbox = dense_losses(
            cls_scores, bbox_preds, t, avg_factor, self.loss_cls, self.loss_bbox,
            self.cls_out_channels, anchors, self.bbox_coder.decode if self.reg_decoded_bbox else None)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    # ------------------------------------------------------------------ inference
    def get_bboxes(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], score_factors=None,
                   img_metas: list[dict] | None = None, cfg=None, rescale: bool = False,
                   with_nms: bool = True) -> list[tuple[Tensor, Tensor]]:
        """Detections of a batch.

        Args:
            cls_scores: per level ``(B, A * cls_out, H, W)``; bbox_preds: ``(B, A * 4, H, W)``.
            img_metas: per image ``img_shape`` (boxes clipped to it), ``scale_factor``.
            cfg: a :class:`DenseTestConfig` (or its dict); default ``self.test_cfg``.
            rescale: boxes in the original image's pixels instead of the input's.
            with_nms: False: per image ``(boxes (n, 4), scores (n,), labels (n,))`` before NMS.

        Returns:
            per image ``(det_bboxes (n, 5) [x1, y1, x2, y2, score], det_labels (n,))``.
        """
        cfg = self.test_cfg if cfg is None else self.parse_test_cfg(cfg)
        cls_scores, bbox_preds = _float32(cls_scores), _float32(bbox_preds)
        mlvl_anchors = self.anchor_generator.grid_priors(
            [tuple(s.shape[-2:]) for s in cls_scores], cls_scores[0].dtype, cls_scores[0].device,
            padded_batch_shape(img_metas))
        return [self._get_bboxes_single([s[i].detach() for s in cls_scores],
                                        [b[i].detach() for b in bbox_preds],
                                        mlvl_anchors, meta, cfg, rescale, with_nms)
                for i, meta in enumerate(img_metas)]

    def _get_bboxes_single(self, cls_score_list, bbox_pred_list, mlvl_anchors, img_meta,
                           cfg: DenseTestConfig, rescale=False, with_nms=True):
        """One image (MMDetection 2.x's override point): see :func:`anchor_detections`."""
        return anchor_detections(cls_score_list, bbox_pred_list, mlvl_anchors, img_meta, cfg,
                                 self.bbox_coder, self.use_sigmoid_cls, rescale, with_nms)


def _float32(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The head's outputs in at least float32: bf16/fp16 ones (autocast) are cast up, a float64
    model's stay float64."""
    return [t if t.dtype == torch.float64 else t.float() for t in tensors]
