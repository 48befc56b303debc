"""The shared part of the one-prior-per-position dense heads (FCOS, ATSS, GFL).

Each of these heads is two towers of convs (classification, regression) applied to every
pyramid level, a few prediction convs on top, and per-level learnable ``Scale``s. They differ
in their priors (points or one square anchor per position), in how a prediction decodes to a
box, and in their targets and losses; what they share lives here:

    layers ─► forward (every level) ─► [training: the subclass's ``loss``]
    inference: per level, threshold and keep the ``nms_pre`` best (prior, class) pairs
               ─► decode (subclass) ─► × quality score (centerness) ─► class-aware NMS

``train_cfg`` and ``test_cfg`` are typed records (:class:`DenseTrainConfig`,
:class:`QualityTestConfig`), parsed when the head (or its detector) is built: an unknown key is
an error naming its path.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detforge.models.layers import ConvModule
from detforge.models.train_test_cfg import DenseTrainConfig, QualityTestConfig
from detforge.registry import BuildError

from .dense_test_mixins import DenseTestMixin

__all__ = ['ConvTowerHead', 'Scale']

class Scale(nn.Module):
    """A learnable scalar multiplier (MMCV's ``Scale``; the parameter is named ``scale``)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _build(registry, cfg, *keys):
    try:
        return registry.build(cfg)
    except BuildError as e:
        raise e.prefix(*keys)


class ConvTowerHead(DenseTestMixin, nn.Module):
    """Base of FCOS/ATSS/GFL heads: towers, priors, the inference path (test-time augmentation:
    :class:`DenseTestMixin`); subclasses add their prediction convs (``_init_predictors``),
    ``forward_single``, ``decode_level`` and ``loss``.

    Args:
        num_classes: object classes (no background; sigmoid classification).
        in_channels: channels of the input features.
        feat_channels: channels of the tower convs.
        stacked_convs: convs in each tower.
        conv_cfg, norm_cfg: conv and norm of the towers (e.g. ``norm_cfg=dict(type='GN',
            num_groups=32)``).
        conv_bias: bias of the tower convs: ``'auto'`` (only without a norm layer) or a bool.
        dcn_on_last_conv: not supported (deformable convs); must be False.
        prior_prob: initial foreground probability of the classifier's bias.
        train_cfg: a :class:`DenseTrainConfig` or its dict (``assigner``, ``allowed_border``,
            ``pos_weight``, ``sampler``, ``debug``; see the subclass for what it uses).
        test_cfg: a :class:`QualityTestConfig` or its dict.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 256, stacked_convs: int = 4,
                 conv_cfg: dict | None = None, norm_cfg: dict | None = None, conv_bias='auto',
                 dcn_on_last_conv: bool = False, prior_prob: float = 0.01,
                 train_cfg=None, test_cfg=None, init_cfg=None):
        super().__init__()
        if num_classes <= 0:
            raise BuildError(f'num_classes must be positive, got {num_classes}', key_path=['num_classes'])
        if dcn_on_last_conv:
            raise BuildError('dcn_on_last_conv=True needs deformable convolutions, which detforge does not '
                             'provide; set dcn_on_last_conv=False', key_path=['dcn_on_last_conv'])
        if conv_bias != 'auto' and not isinstance(conv_bias, bool):
            raise BuildError(f"conv_bias must be 'auto', True or False, got {conv_bias!r}", key_path=['conv_bias'])
        self.num_classes = num_classes
        self.cls_out_channels = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.conv_bias = conv_bias
        self.prior_prob = prior_prob
        self.init_cfg = init_cfg
        self.train_cfg = self.parse_train_cfg(train_cfg)
        self.test_cfg = self.parse_test_cfg(test_cfg)
        self.cls_convs = self._tower()
        self.reg_convs = self._tower()

    @classmethod
    def parse_train_cfg(cls, cfg, path=('train_cfg',)) -> DenseTrainConfig | None:
        """The typed record of a ``train_cfg`` dict (see :class:`DenseTrainConfig`)."""
        return DenseTrainConfig.parse(cfg, path)

    @classmethod
    def parse_test_cfg(cls, cfg, path=('test_cfg',)) -> QualityTestConfig | None:
        """The typed record of a ``test_cfg`` dict (see :class:`QualityTestConfig`)."""
        return QualityTestConfig.parse(cfg, path)

    @property
    def test_settings(self) -> QualityTestConfig | None:
        """``test_cfg`` (its name before the typed records)."""
        return self.test_cfg

    # ------------------------------------------------------------------ layers
    def _tower(self) -> nn.ModuleList:
        return nn.ModuleList(
            ConvModule(self.in_channels if i == 0 else self.feat_channels, self.feat_channels, 3, padding=1,
                       conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, bias=self.conv_bias)
            for i in range(self.stacked_convs))

    def _init_weights(self, cls_conv: nn.Conv2d) -> None:
        """MMDetection's initialisation of these heads: every conv ``N(0, 0.01)`` with zero bias,
        norm layers at identity, the classifier's bias at ``-log((1 - p) / p)``."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.constant_(cls_conv.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def init_weights(self) -> None:
        pass  # layers are initialised when built

    def tower_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` → classification and regression features ``(B, feat, H, W)``."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return cls_feat, reg_feat

    # ------------------------------------------------------------------ forward
    def forward_single(self, x: Tensor, level: int) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], ...]:
        """Per level outputs of :meth:`forward_single`, grouped by kind: ``(cls_scores,
        bbox_preds[, quality])``, each a list over levels of ``(B, C_kind, H_l, W_l)``."""
        per_level = [self.forward_single(x, level) for level, x in enumerate(feats)]
        return tuple(list(kind) for kind in zip(*per_level))

    def forward_train(self, x, img_metas, gt_bboxes, gt_labels=None, gt_bboxes_ignore=None,
                      proposal_cfg=None, **kwargs):
        """Losses of the batch (and, with ``proposal_cfg``, its detections as proposals)."""
        outs = self(x)
        losses = self.loss(*outs, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore=gt_bboxes_ignore)
        if proposal_cfg is None:
            return losses
        with torch.no_grad():
            return losses, self.get_bboxes(*outs, img_metas=img_metas, cfg=proposal_cfg)

    def simple_test(self, feats, img_metas, rescale: bool = False):
        """Detections per image: ``(det_bboxes (n, 5), det_labels (n,))``."""
        return self.get_bboxes(*self(feats), img_metas=img_metas, rescale=rescale)

    # ------------------------------------------------------------------ priors
    @staticmethod
    def input_shape(img_metas: Sequence[dict]) -> tuple[int, int]:
        """``(H, W)`` of the padded batch."""
        meta = img_metas[0]
        shape = meta.get('batch_input_shape') or meta.get('pad_shape') or meta['img_shape']
        return int(shape[0]), int(shape[1])

    def mlvl_priors(self, featmap_sizes, img_metas, device, dtype=torch.float32) -> list[Tensor]:
        """Priors of every level, ``(H_l * W_l, 2 or 4)`` each (cached by sizes)."""
        sizes = tuple(tuple(int(v) for v in s) for s in featmap_sizes)
        key = (sizes, self.input_shape(img_metas), str(device), dtype)
        cache = self.__dict__.setdefault('_prior_cache', {})
        if key not in cache:
            if len(cache) > 32:
                cache.clear()
            cache[key] = self.grid_priors(sizes, img_metas, device, dtype)
        return cache[key]

    def grid_priors(self, featmap_sizes, img_metas, device, dtype) -> list[Tensor]:
        return self.prior_generator.grid_priors(featmap_sizes, dtype, device)

    # ------------------------------------------------------------------ inference
    def decode_level(self, priors: Tensor, bbox_pred: Tensor, level: int, max_shape) -> Tensor:
        """``priors (n, 2 or 4)`` and their predictions ``(n, D)`` on ``level`` → boxes ``(n, 4)``
        in input pixels, clipped to ``max_shape``."""
        raise NotImplementedError

    def get_bboxes(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], score_factors=None,
                   img_metas: list[dict] | None = None, cfg=None, rescale: bool = False,
                   with_nms: bool = True) -> list[tuple[Tensor, ...]]:
        """Per image ``(det_bboxes (n, 5) [x1, y1, x2, y2, score], det_labels (n,))`` in the
        input image's pixels, or the original image's with ``rescale``.

        Args:
            cls_scores: per level ``(B, num_classes, H, W)`` logits.
            bbox_preds: per level ``(B, D, H, W)`` box predictions.
            score_factors: per level ``(B, 1, H, W)`` quality logits (centerness), or None.
        """
        settings = self.test_cfg if cfg is None else self.parse_test_cfg(cfg)
        if settings is None:
            raise BuildError('the head was built without a test_cfg', key_path=['test_cfg'])
        cls_scores = [s.float() for s in cls_scores]
        bbox_preds = [b.float() for b in bbox_preds]
        featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        priors = self.mlvl_priors(featmap_sizes, img_metas, cls_scores[0].device)
        results = []
        for i, meta in enumerate(img_metas):
            factors = None if score_factors is None else [f[i].detach().float() for f in score_factors]
            results.append(self._get_bboxes_single([s[i].detach() for s in cls_scores],
                                                   [b[i].detach() for b in bbox_preds], factors,
                                                   priors, meta, settings, rescale, with_nms))
        return results

    def _get_bboxes_single(self, cls_score_list, bbox_pred_list, factor_list, mlvl_priors, img_meta,
                           settings: QualityTestConfig, rescale=False, with_nms=True):
        """One image; ``cls_score_list`` per level ``(C, H, W)``. Returns ``(det_bboxes,
        det_labels)``, or ``(boxes, scores, labels)`` before NMS if not ``with_nms``."""
        all_boxes, all_scores, all_labels = [], [], []
        for level, (cls_score, bbox_pred, priors) in enumerate(zip(cls_score_list, bbox_pred_list, mlvl_priors)):
            scores = cls_score.permute(1, 2, 0).reshape(-1, self.cls_out_channels).sigmoid()
            bbox_pred = bbox_pred.permute(1, 2, 0).reshape(scores.size(0), -1)
            factor = None if factor_list is None else factor_list[level].permute(1, 2, 0).reshape(-1).sigmoid()
            if factor is not None and settings.score_factor_fusion == 'geometric_mean':
                scores, factor = torch.sqrt(scores * factor[:, None]), None
            kept, prior_idx, labels = _threshold_and_topk(scores, settings.score_thr, settings.nms_pre)
            boxes = self.decode_level(priors[prior_idx], bbox_pred[prior_idx], level, img_meta['img_shape'])
            all_boxes.append(boxes)
            all_scores.append(kept if factor is None else kept * factor[prior_idx])
            all_labels.append(labels)
        boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        if rescale:
            boxes = boxes / boxes.new_tensor(_scale_factor(img_meta))
        if not with_nms:
            return boxes, scores, labels
        return _nms(boxes, scores, labels, settings)


def _threshold_and_topk(scores: Tensor, score_thr: float, nms_pre: int) -> tuple[Tensor, Tensor, Tensor]:
    """``scores (n, C)`` → the (prior, class) pairs above ``score_thr``, at most ``nms_pre`` of
    the best: ``(scores (m,), prior indices (m,), labels (m,))``."""
    flat = scores.reshape(-1)
    keep = torch.nonzero(flat > score_thr, as_tuple=False).squeeze(-1)
    flat = flat[keep]
    if 0 < nms_pre < flat.numel():
        flat, top = flat.topk(nms_pre)
        keep = keep[top]
    return flat, keep // scores.size(1), keep % scores.size(1)


def _nms(boxes: Tensor, scores: Tensor, labels: Tensor, settings: QualityTestConfig):
    """Class-aware NMS, best ``max_per_img`` kept: ``(det_bboxes (n, 5), det_labels (n,))``."""
    keep = batched_nms(boxes, scores, labels, settings.iou_threshold)
    if settings.max_per_img > 0:
        keep = keep[:settings.max_per_img]
    return torch.cat([boxes[keep], scores[keep, None]], dim=-1), labels[keep]


def _scale_factor(meta) -> np.ndarray:
    sf = np.asarray(meta.get('scale_factor', 1.0), dtype=np.float32).reshape(-1)
    return np.repeat(sf, 4) if sf.size == 1 else sf
