"""Generalized Focal Loss (Li et al., NeurIPS 2020): Quality Focal Loss for the joint
class-and-quality score, Distribution Focal Loss for the box-side distributions."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detforge.registry import LOSSES

from .utils import check_reduction, weight_reduce_loss

__all__ = ['QualityFocalLoss', 'DistributionFocalLoss', 'quality_focal_loss', 'distribution_focal_loss']


def quality_focal_loss(pred: Tensor, label: Tensor, score: Tensor, beta: float = 2.0) -> Tensor:
    """``QFL(sigma) = -|y - sigma|^beta ((1 - y) log(1 - sigma) + y log(sigma))`` per class,
    summed over classes.

    Args:
        pred: ``(n, C)`` logits.
        label: ``(n,)`` class index in ``[0, C]`` (``C`` = background).
        score: ``(n,)`` quality target ``y`` of the labelled class (IoU for GFL); every other
            class has target 0.

    Returns:
        ``(n,)`` loss per sample.
    """
    sigma = pred.sigmoid()
    target = torch.zeros_like(pred)
    is_pos = (label >= 0) & (label < pred.size(1))
    rows = torch.nonzero(is_pos, as_tuple=True)[0]
    target[rows, label[rows]] = score[rows].to(pred.dtype)
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction='none') * (target - sigma).abs().pow(beta)
    return loss.sum(dim=1)


def distribution_focal_loss(pred: Tensor, label: Tensor) -> Tensor:
    """``DFL(S_i, S_{i+1}) = -((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1})``: cross-entropy
    towards the two bins around the continuous target ``y``.

    Args:
        pred: ``(n, reg_max + 1)`` logits of the distribution over the bins ``0..reg_max``.
        label: ``(n,)`` target in ``[0, reg_max)``.

    Returns:
        ``(n,)`` loss per sample.
    """
    left = label.long()
    right = left + 1
    weight_left = right.to(label.dtype) - label
    weight_right = label - left.to(label.dtype)
    return (F.cross_entropy(pred, left, reduction='none') * weight_left
            + F.cross_entropy(pred, right, reduction='none') * weight_right)


@LOSSES.register_module()
class QualityFocalLoss(nn.Module):
    """Quality Focal Loss on sigmoid logits; the target is the pair ``(labels (n,), scores (n,))``.

    Args:
        use_sigmoid: must be True.
        beta: the focusing exponent.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the loss.
        activated: must be False (logits expected).
    """

    def __init__(self, use_sigmoid: bool = True, beta: float = 2.0, reduction: str = 'mean',
                 loss_weight: float = 1.0, activated: bool = False):
        super().__init__()
        if not use_sigmoid:
            raise ValueError('QualityFocalLoss supports only use_sigmoid=True')
        if activated:
            raise ValueError('QualityFocalLoss expects logits (activated=False)')
        self.use_sigmoid = use_sigmoid
        self.beta = beta
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: tuple[Tensor, Tensor], weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None) -> Tensor:
        reduction = check_reduction(reduction_override) if reduction_override else self.reduction
        label, score = target
        loss = quality_focal_loss(pred, label, score, self.beta)
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return f'beta={self.beta}, loss_weight={self.loss_weight}'


@LOSSES.register_module()
class DistributionFocalLoss(nn.Module):
    """Distribution Focal Loss on ``(n, reg_max + 1)`` logits against ``(n,)`` continuous targets.

    Args:
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the loss.
    """

    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None) -> Tensor:
        reduction = check_reduction(reduction_override) if reduction_override else self.reduction
        if target.numel() == 0:
            return pred.sum() * 0
        loss = distribution_focal_loss(pred, target)
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'
