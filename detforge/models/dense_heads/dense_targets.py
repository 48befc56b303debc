"""The training targets and losses of a dense head, shared by every head that predicts a
class and a box at each prior (anchor or point) of a feature pyramid: RetinaHead, RPNHead
(and the heads built on :class:`AnchorHead`).

    priors (one set, shared by the batch, :func:`batch_anchors`) ─► inside flags per image
    (allowed_border) ─► assign each prior to a ground truth (``assigner.assign_batch``)
    ─► sample (``sampler.sample_batch``) ─► encode box targets ─► per-prior labels and
    weights (:func:`compute_dense_targets`) ─► normaliser (:func:`normalize_targets`)
    ─► classification and box losses (:func:`dense_losses`)

each step on the whole batch at once, with no host synchronisation (a random sampler alone
draws image by image). :func:`moving_average_normalizer` is the loss normaliser that
Detectron2 uses.
"""
from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from detforge.models.task_modules import (BaseAssigner, BaseSampler, PseudoSampler, gather_assigned,
                                          padded_batch_shape)
from detforge.registry import BuildError

__all__ = ['DenseTargets', 'batch_anchors', 'inside_flags', 'compute_dense_targets',
           'dense_assigner_sampler', 'check_loss_normalization', 'normalize_targets',
           'dense_losses', 'flatten_levels', 'moving_average_normalizer', 'LOSS_NORMALIZATIONS']

# 'batch': MMDetection (sum over images of max(n_i, 1)); 'per_image': torchvision's
# RetinaNet; 'batch_total': torchvision's RPN (the batch's sampled anchors, at least 1)
LOSS_NORMALIZATIONS = ('batch', 'per_image', 'batch_total')


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


def batch_anchors(prior_generator, featmap_sizes: Sequence, img_metas: Sequence[dict], device,
                  dtype=torch.float32, cache: dict | None = None) -> tuple[Tensor, Tensor]:
    """Anchors of a batch and their valid flags.

    Args:
        prior_generator: an :class:`AnchorGenerator` (``grid_priors``, ``valid_flags``).
        featmap_sizes: per level ``(H_l, W_l)``.
        img_metas: per image ``pad_shape`` (else ``img_shape``), and the batch's padded shape
            (``padded_batch_shape``: anchors are laid out on it).
        cache: a dict to keep the result in, keyed by sizes, pad shapes, device and dtype
            (a fixed input size builds the anchors once); None computes them every time.

    Returns:
        ``anchors (N, 4)`` (the same for every image, levels concatenated) and ``valid (B, N)``
        bool: the anchor's feature cell lies in the image's padded area, not the batch's.
    """
    sizes = tuple(tuple(int(v) for v in s) for s in featmap_sizes)
    pad_shapes = tuple(tuple(meta.get('pad_shape', meta['img_shape'])[:2]) for meta in img_metas)
    batch_shape = padded_batch_shape(img_metas)
    key = (sizes, pad_shapes, batch_shape, str(device), dtype)
    if cache is not None and key in cache:
        return cache[key]
    anchors = torch.cat(prior_generator.grid_priors(sizes, dtype, device, batch_shape))
    valid = torch.stack([torch.cat(prior_generator.valid_flags(sizes, pad, device))
                         for pad in pad_shapes])
    if cache is not None:
        if len(cache) > 32:
            cache.clear()
        cache[key] = (anchors, valid)
    return anchors, valid


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
        assigner: has ``assign_batch`` (see :class:`BaseAssigner`).
        sampler: has ``sample_batch`` (see :class:`BaseSampler`).
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
    gt_inds, max_overlaps = assigner.assign_batch(priors, inside, gt_bboxes, gt_bboxes_ignore)
    pos, neg = sampler.sample_batch(gt_inds, max_overlaps, priors, gt_bboxes, gt_labels)

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


def dense_assigner_sampler(train_cfg, sampling: bool):
    """The assigner and sampler of a dense head's :class:`DenseTrainConfig`: its sampler when
    the loss samples (``sampling``) and the config names one, else a PseudoSampler (every
    assigned prior counts). Both have ``assign_batch`` / ``sample_batch`` (given those of
    :class:`BaseAssigner` / :class:`BaseSampler` when they lack them)."""
    if train_cfg.assigner is None:
        raise BuildError('train_cfg needs an assigner, e.g. dict(type="MaxIoUAssigner", ...)',
                         key_path=['train_cfg'])
    sampler = train_cfg.sampler if sampling and train_cfg.sampler is not None else PseudoSampler()
    assigner = train_cfg.assigner
    # a class written for MMDetection 2.x has only assign()/sample(): it gets the base
    # classes' image-by-image assign_batch()/sample_batch(), so the head calls one method
    for part, verb, base in ((assigner, 'assign', BaseAssigner), (sampler, 'sample', BaseSampler)):
        if not callable(getattr(part, f'{verb}_batch', None)):
            if not callable(getattr(part, verb, None)):
                raise BuildError(f'{type(part).__name__} has neither {verb}() nor {verb}_batch()',
                                 key_path=['train_cfg', f'{verb}er' if verb == 'assign' else 'sampler'])
            setattr(part, f'{verb}_batch', types.MethodType(getattr(base, f'{verb}_batch'), part))
    if getattr(sampler, 'add_gt_as_proposals', False):  # a gt has no prior slot
        raise BuildError('a dense head samples anchors: set add_gt_as_proposals=False in its sampler',
                         key_path=['train_cfg', 'sampler', 'add_gt_as_proposals'])
    return assigner, sampler


def check_loss_normalization(mode: str, momentum: float | None, sampling: bool) -> None:
    """Refuse (at build time) a normalisation setting :func:`normalize_targets` cannot do."""
    if momentum is not None and not 0 <= momentum < 1:
        raise BuildError(f'loss_normalizer_momentum must be in [0, 1), got {momentum}',
                         key_path=['loss_normalizer_momentum'])
    if mode not in ('batch', 'per_image'):
        raise BuildError(f"loss_normalization must be 'batch' or 'per_image', got {mode!r}",
                         key_path=['loss_normalization'])
    if mode == 'per_image' and (momentum is not None or sampling):
        raise BuildError("loss_normalization='per_image' divides by each image's positives: it takes "
                         'no loss_normalizer_momentum and no sampled loss (FocalLoss-like losses only)',
                         key_path=['loss_normalization'])


def normalize_targets(t: DenseTargets, sampling: bool, mode: str = 'batch',
                      normalizer: Tensor | None = None, momentum: float | None = None,
                      training: bool = False) -> tuple[DenseTargets, Tensor]:
    """The losses' normaliser (``avg_factor``), and the targets with the weights it implies.

    Args:
        t: the batch's targets.
        sampling: the loss counts the sampled negatives too (not a focal-like loss).
        mode: ``'batch'`` (MMDetection): the sum over images of ``max(n_i, 1)`` positives
            (plus ``max(neg_i, 1)`` when sampling); ``'per_image'`` (torchvision's
            RetinaNet): each image's anchors weighted ``1 / (B * max(n_i, 1))`` and an
            ``avg_factor`` of 1, i.e. the mean over images of each image's normalised sum;
            ``'batch_total'`` (torchvision's RPN): the batch's sampled anchors (positives only
            without sampling), at least 1.
        normalizer, momentum: Detectron2's moving average (``'batch'`` only): the scalar
            buffer it lives in and its momentum; None uses the current count.
        training: update the moving average.

    Returns:
        ``(targets, avg_factor)``: ``avg_factor`` a scalar tensor.
    """
    if mode == 'batch_total':
        num_total = t.pos.sum() + t.neg.sum() if sampling else t.pos.sum()
        return t, num_total.clamp(min=1).to(t.label_weights.dtype)
    avg_factor = t.num_pos_per_image_clamped()
    if sampling:
        avg_factor = avg_factor + t.num_neg_per_image_clamped()
    if momentum is not None:
        avg_factor = moving_average_normalizer(normalizer, avg_factor, momentum, training)
    if mode == 'per_image':
        image_factor = 1.0 / (t.num_pos_per_image() * t.labels.size(0))   # (B,)
        t = dataclasses.replace(t, label_weights=t.label_weights * image_factor[:, None],
                                bbox_weights=t.bbox_weights * image_factor[:, None, None])
        avg_factor = avg_factor.new_ones(())
    return t, avg_factor


def dense_losses(cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], t: DenseTargets,
                 avg_factor: Tensor, loss_cls, loss_bbox, cls_out_channels: int,
                 anchors: Tensor | None = None, decode: Callable | None = None,
                 positives_only: bool = False) -> tuple[Tensor, Tensor]:
    """Classification loss over every prior of the batch and box loss of the positives.

    Args:
        cls_scores: per level ``(B, A * cls_out_channels, H, W)`` logits.
        bbox_preds: per level ``(B, A * 4, H, W)`` deltas.
        t: the targets (weights as :func:`normalize_targets` returns them).
        avg_factor: the normaliser of both losses.
        loss_cls, loss_bbox: the loss modules (``(pred, target, weight, avg_factor=)``).
        anchors: ``(N, 4)`` with ``decode``: the box loss then sees decoded boxes
            (``reg_decoded_bbox``, IoU losses).
        positives_only: the box loss gets the positives only (torchvision's RPN; the same
            value as over every prior with zero weights, up to the order of the float sum).

    Returns:
        ``(loss_cls, loss_bbox)`` scalar tensors.
    """
    cls_score = flatten_levels(cls_scores, cls_out_channels).reshape(-1, cls_out_channels)
    bbox_pred = flatten_levels(bbox_preds, 4)                             # (B, N, 4)
    loss_c = loss_cls(cls_score, t.labels.reshape(-1), t.label_weights.reshape(-1),
                      avg_factor=avg_factor)
    if positives_only:
        pos = t.bbox_weights[..., 0] > 0
        pred = bbox_pred[pos]
        if decode is not None:
            pred = decode(anchors.expand(bbox_pred.size(0), -1, -1)[pos], pred)
        loss_b = loss_bbox(pred, t.bbox_targets[pos], t.bbox_weights[pos], avg_factor=avg_factor)
        return loss_c, loss_b
    if decode is not None:
        bbox_pred = decode(anchors[None].expand_as(bbox_pred), bbox_pred)
    loss_b = loss_bbox(bbox_pred.reshape(-1, 4), t.bbox_targets.reshape(-1, 4),
                       t.bbox_weights.reshape(-1, 4), avg_factor=avg_factor)
    return loss_c, loss_b


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
