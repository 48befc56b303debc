"""Smooth L1 (Huber-like) and L1 regression losses."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detforge.registry import LOSSES

from .utils import check_reduction, weight_reduce_loss

__all__ = ['SmoothL1Loss', 'L1Loss', 'smooth_l1_loss', 'l1_loss']


def smooth_l1_loss(pred: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Element-wise ``0.5 d^2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 beta``."""
    if beta <= 0:
        return l1_loss(pred, target)
    diff = torch.abs(pred - target)
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Element-wise ``|pred - target|``."""
    return torch.abs(pred - target)


class _ElementwiseLoss(nn.Module):
    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None) -> Tensor:
        reduction = check_reduction(reduction_override) if reduction_override else self.reduction
        if target.numel() == 0:
            return pred.sum() * 0  # keeps the graph connected (no positives)
        return self.loss_weight * weight_reduce_loss(self.elementwise(pred, target), weight,
                                                     reduction, avg_factor)


@LOSSES.register_module()
class SmoothL1Loss(_ElementwiseLoss):
    """Smooth L1 loss with transition point ``beta`` (pixels or delta units)."""

    def __init__(self, beta: float = 1.0, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__(reduction, loss_weight)
        self.beta = beta

    def elementwise(self, pred, target):
        return smooth_l1_loss(pred, target, self.beta)

    def extra_repr(self) -> str:
        return f'beta={self.beta}, loss_weight={self.loss_weight}'


@LOSSES.register_module()
class L1Loss(_ElementwiseLoss):
    """L1 loss."""

    def elementwise(self, pred, target):
        return l1_loss(pred, target)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'
