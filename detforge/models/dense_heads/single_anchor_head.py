"""The shared part of ATSS and GFL: one square anchor per position, assigned by an assigner
that may look at the pyramid levels (ATSS), targets for the batch.

    anchors (shared by the batch) + valid flags per image
    ─► assign per image (ATSSAssigner: top-k per level by centre distance, mean + std IoU)
    ─► labels, label weights (positives and negatives 1, ignored and invalid 0), box targets
       (the matched ground truths, in pixels)
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from detforge.registry import PRIOR_GENERATORS, BuildError

from .conv_tower_head import ConvTowerHead, _build

__all__ = ['SingleAnchorHead', 'SingleAnchorTargets']


@dataclass
class SingleAnchorTargets:
    """Targets of every prior of every image.

    Attributes:
        labels: ``(B, N)`` long, ``num_classes`` = background.
        label_weights: ``(B, N)`` float: 1 for positives and negatives, 0 for ignored priors and
            priors outside the image.
        bbox_targets: ``(B, N, 4)`` the matched ground truth (xyxy pixels), 0 elsewhere.
        pos: ``(B, N)`` bool.
        num_pos: sum over images of ``max(positives, 1)`` (MMDetection's normaliser).
    """
    labels: Tensor
    label_weights: Tensor
    bbox_targets: Tensor
    pos: Tensor
    num_pos: float


class SingleAnchorHead(ConvTowerHead):
    """A :class:`ConvTowerHead` whose priors are the anchors of ``anchor_generator`` (one per
    position) and whose ``train_cfg.assigner`` picks the positives.

    Args:
        anchor_generator: config of the :class:`AnchorGenerator` (one anchor per position).
        train_cfg: ``assigner`` (e.g. ``dict(type='ATSSAssigner', topk=9)``), ``allowed_border``
            (``-1``: every anchor; otherwise anchors further outside the image are not used),
            ``pos_weight`` (``<= 0``: 1), ``debug``, ``sampler`` (unused: every anchor counts).
        **kwargs: see :class:`ConvTowerHead`.
    """

    def __init__(self, num_classes: int, in_channels: int, anchor_generator: dict, train_cfg=None, **kwargs):
        super().__init__(num_classes, in_channels, train_cfg=train_cfg, **kwargs)
        self.prior_generator = _build(PRIOR_GENERATORS, anchor_generator, 'anchor_generator')
        self.anchor_generator = self.prior_generator
        if set(self.prior_generator.num_base_anchors) != {1}:
            raise BuildError(f'{type(self).__name__} needs one anchor per position, got '
                             f'{self.prior_generator.num_base_anchors} (use one ratio and one scale)',
                             key_path=['anchor_generator'])
        self.strides = [s[0] if isinstance(s, (tuple, list)) else s for s in self.prior_generator.strides]
        self.assigner = None
        self.allowed_border, self.pos_weight = -1, -1.0
        if self.train_cfg is not None:
            if self.train_cfg.assigner is None:
                raise BuildError("train_cfg needs an assigner, e.g. dict(type='ATSSAssigner', topk=9)",
                                 key_path=['train_cfg'])
            self.assigner = self.train_cfg.assigner
            self.allowed_border = self.train_cfg.allowed_border
            self.pos_weight = float(self.train_cfg.pos_weight)
        self._assign_by_level = self.assigner is not None and \
            'num_level_bboxes' in inspect.signature(self.assigner.assign).parameters

    # ------------------------------------------------------------------ priors
    def prior_strides(self, mlvl_priors: Sequence[Tensor]) -> Tensor:
        """``(N,)`` stride of each prior's level."""
        counts = torch.tensor([len(p) for p in mlvl_priors], device=mlvl_priors[0].device)
        return mlvl_priors[0].new_tensor(self.strides).repeat_interleave(counts)

    def valid_flags(self, featmap_sizes, img_metas, device) -> Tensor:
        """``(B, N)`` bool: the anchor's cell lies inside the image's padded area, and (with
        ``allowed_border >= 0``) the anchor is not further than that outside the image."""
        valid = torch.stack([torch.cat(self.prior_generator.valid_flags(
            featmap_sizes, tuple(meta.get('pad_shape', meta['img_shape']))[:2], device)) for meta in img_metas])
        if self.allowed_border >= 0:
            anchors = torch.cat(self.mlvl_priors(featmap_sizes, img_metas, device))
            b = self.allowed_border
            for i, meta in enumerate(img_metas):
                h, w = meta['img_shape'][:2]
                valid[i] &= (anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) & (anchors[:, 2] < w + b) \
                    & (anchors[:, 3] < h + b)
        return valid

    # ------------------------------------------------------------------ targets
    def get_targets(self, mlvl_anchors: Sequence[Tensor], valid: Tensor, gt_bboxes_list: Sequence[Tensor],
                    gt_labels_list: Sequence[Tensor], gt_bboxes_ignore_list=None) -> SingleAnchorTargets:
        """Targets of the batch (the assigner runs image by image).

        Args:
            mlvl_anchors: per level ``(N_l, 4)``.
            valid: ``(B, N)`` bool from :meth:`valid_flags`.
            gt_bboxes_list: per image ``(k_i, 4)``; ``gt_labels_list`` per image ``(k_i,)``.
        """
        if self.assigner is None:
            raise BuildError(f'{type(self).__name__} was built without a train_cfg: it cannot compute losses',
                             key_path=['train_cfg'])
        anchors = torch.cat(mlvl_anchors)
        B, N = valid.shape
        level_of = torch.arange(len(mlvl_anchors), device=anchors.device).repeat_interleave(
            torch.tensor([len(a) for a in mlvl_anchors], device=anchors.device))
        gt_inds = torch.zeros((B, N), dtype=torch.long, device=anchors.device)
        for i, gt in enumerate(gt_bboxes_list):
            ignore = None if gt_bboxes_ignore_list is None else gt_bboxes_ignore_list[i]
            inside = valid[i]
            args = (anchors[inside],)
            if self._assign_by_level:
                args += (torch.bincount(level_of[inside], minlength=len(mlvl_anchors)).tolist(),)
            result = self.assigner.assign(*args, gt.to(anchors.dtype), ignore, gt_labels_list[i])
            gt_inds[i, inside] = result.gt_inds
        pos = gt_inds > 0
        neg = (gt_inds == 0) & valid
        matched = (gt_inds - 1).clamp(min=0)
        labels = torch.full((B, N), self.num_classes, dtype=torch.long, device=anchors.device)
        bbox_targets = anchors.new_zeros((B, N, 4))
        for i, (gt, gt_labels) in enumerate(zip(gt_bboxes_list, gt_labels_list)):
            if len(gt):
                labels[i] = torch.where(pos[i], gt_labels.to(torch.long)[matched[i]], self.num_classes)
                bbox_targets[i] = torch.where(pos[i, :, None], gt.to(anchors.dtype)[matched[i]], 0.)
        pos_w = 1.0 if self.pos_weight <= 0 else self.pos_weight
        label_weights = pos.to(anchors.dtype) * pos_w + neg.to(anchors.dtype)
        num_pos = float(pos.sum(dim=1).clamp(min=1).sum())
        return SingleAnchorTargets(labels, label_weights, bbox_targets, pos, num_pos)
