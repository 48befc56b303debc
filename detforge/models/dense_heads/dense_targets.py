"""The training targets of a dense head, shared by every head that predicts a class and a
box at each prior (anchor or point) of a feature pyramid: RetinaHead, RPNHead, and the
anchor-free heads.

    priors (one set, shared by the batch) ─► inside flags per image (allowed_border)
    ─► assign each prior to a ground truth (``assign_batch``) ─► sample (``sample_batch``)
    ─► encode box targets ─► per-prior labels and weights

each step on the whole batch at once, with no host synchronisation (a random sampler alone
draws image by image). :func:`moving_average_normalizer` is the loss normaliser that
Detectron2 uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from detforge.models.task_modules import assign_batch, gather_assigned, sample_batch

__all__ = ['DenseTargets', 'inside_flags', 'compute_dense_targets', 'flatten_levels',
           'moving_average_normalizer']


@dataclass
class DenseTargets:
    """Targets of ``N`` priors in ``B`` images.

    Attributes:
        labels: ``(B, N)`` long, the class of a positive; ``num_classes`` (background) else.
        label_weights: ``(B, N)`` float: ``pos_weight`` (1 when <= 0) on positives, 1 on
            negatives, 0 on priors neither sampled nor valid.
        bbox_targets: ``(B, N, 4)`` encoded targets (decoded boxes with
            ``reg_decoded_bbox``); 0 off the positives.
        bbox_weights: ``(B, N, 4)`` 1 on positives.
        pos, neg: ``(B, N)`` bool, the sampled positives and negatives.
    """

    labels: Tensor
    label_weights: Tensor
    bbox_targets: Tensor
    bbox_weights: Tensor
    pos: Tensor
    neg: Tensor

    def num_pos_per_image(self) -> Tensor:
        """``(B,)``: each image's ``max(positives, 1)``."""
        return self.pos.sum(dim=1).clamp(min=1).to(self.label_weights.dtype)

    def num_pos_per_image_clamped(self) -> Tensor:
        """Scalar: the sum over images of ``max(positives, 1)`` (MMDetection's count)."""
        return self.pos.sum(dim=1).clamp(min=1).sum().to(self.label_weights.dtype)

    def num_neg_per_image_clamped(self) -> Tensor:
        """Scalar: the sum over images of ``max(negatives, 1)``."""
        return self.neg.sum(dim=1).clamp(min=1).sum().to(self.label_weights.dtype)


def inside_flags(priors: Tensor, valid: Tensor, img_shapes: Sequence, allowed_border: float) -> Tensor:
    """``(B, N)`` bool: valid priors that also lie within ``allowed_border`` px of their image
    (MMDetection's ``anchor_inside_flags``; ``allowed_border < 0`` keeps every valid prior).

    Args:
        priors: ``(N, 4)`` boxes shared by the batch.
        valid: ``(B, N)`` bool, priors on the image's (not the padding's) feature cells.
        img_shapes: per image ``(h, w, ...)`` of the resized image.
    """
    if allowed_border < 0:
        return valid
    hw = priors.new_tensor([tuple(s[:2]) for s in img_shapes])          # (B, 2)
    img_h, img_w = hw[:, :1], hw[:, 1:]
    return valid & (priors[:, 0] >= -allowed_border) & (priors[:, 1] >= -allowed_border) \
        & (priors[:, 2] < img_w + allowed_border) & (priors[:, 3] < img_h + allowed_border)


def compute_dense_targets(priors: Tensor, inside: Tensor, gt_bboxes: Sequence[Tensor],
                  gt_labels: Sequence[Tensor] | None, assigner, sampler, num_classes: int,
                  encode: Callable[[Tensor, Tensor], Tensor] | None,
                  pos_weight: float = -1, gt_bboxes_ignore=None) -> DenseTargets:
    """Classification and box targets of every prior of every image, the batch at once.

    Args:
        priors: ``(N, 4)`` anchors (or point boxes) shared by the batch.
        inside: ``(B, N)`` bool, the priors that may be trained on.
        gt_bboxes: per image ``(k_i, 4)`` xyxy px; ``gt_labels``: per image ``(k_i,)``, or
            None (every object is class 0, as for RPN).
        assigner: has ``assign_batch`` or ``assign`` (see :func:`assign_batch`).
        sampler: has ``sample_batch`` (see :func:`sample_batch`).
        num_classes: the background label.
        encode: ``(priors (B, N, 4), gts (B, N, 4)) -> targets (B, N, 4)``; None keeps the
            matched boxes (``reg_decoded_bbox``).
        pos_weight: classification weight of positives (``<= 0``: 1).
        gt_bboxes_ignore: per image ``(m_i, 4)`` or None.

    Returns:
        :class:`DenseTargets`.
    """
    B, N = inside.shape
    gt_bboxes = [gt.to(priors.dtype) for gt in gt_bboxes]
    gt_inds, max_overlaps = assign_batch(assigner, priors, inside, gt_bboxes, gt_bboxes_ignore)
    pos, neg = sample_batch(sampler, gt_inds, max_overlaps, priors, gt_bboxes, gt_labels)

    matched_gts = gather_assigned(gt_bboxes, gt_inds, fill=1.)          # (B, N, 4)
    matched_labels = torch.zeros_like(gt_inds) if gt_labels is None else \
        gather_assigned([l.to(torch.long) for l in gt_labels], gt_inds)
    targets = matched_gts if encode is None else encode(priors[None].expand(B, N, 4), matched_gts)

    labels = torch.where(pos, matched_labels, num_classes)
    label_weights = pos * (1.0 if pos_weight is None or pos_weight <= 0 else float(pos_weight)) \
        + neg.to(priors.dtype)
    bbox_targets = torch.where(pos[..., None], targets, 0.)
    bbox_weights = pos[..., None].expand(B, N, 4).to(priors.dtype)
    return DenseTargets(labels, label_weights, bbox_targets, bbox_weights, pos, neg)


def flatten_levels(maps: Sequence[Tensor], channels: int) -> Tensor:
    """Per level ``(B, A * channels, H, W)`` → ``(B, sum H * W * A, channels)`` in the
    priors' order (position-major, then prior)."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.size(0), -1, channels) for m in maps], dim=1)


def moving_average_normalizer(buffer: Tensor, value: Tensor, momentum: float, training: bool) -> Tensor:
    """Detectron2's loss normaliser: ``buffer <- m * buffer + (1 - m) * value`` (in place,
    when training) and return it. ``buffer`` is a scalar buffer of the head, saved in
    checkpoints so that a resumed run continues the same average."""
    if training:
        buffer.mul_(momentum).add_((1 - momentum) * value.detach())
    return buffer.clone()
