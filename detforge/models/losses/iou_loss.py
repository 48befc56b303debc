"""IoU-based box losses on decoded ``xyxy`` boxes."""
from __future__ import annotations

from torch import Tensor, nn

from detforge.registry import LOSSES
from detforge.structures import bbox_overlaps

from .utils import check_reduction, weight_reduce_loss

__all__ = ['IoULoss', 'GIoULoss']


class _OverlapLoss(nn.Module):
    def __init__(self, eps: float = 1e-6, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__()
        self.eps = eps
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None) -> Tensor:
        """``pred``, ``target``: ``(n, 4)`` boxes; ``weight``: ``(n,)`` or ``(n, 4)`` (its mean
        over the 4 coordinates is used, as MMDetection does)."""
        reduction = check_reduction(reduction_override) if reduction_override else self.reduction
        if weight is not None and weight.dim() > 1:
            weight = weight.mean(-1)
        if pred.numel() == 0:
            return pred.sum() * 0
        return self.loss_weight * weight_reduce_loss(self.elementwise(pred, target), weight,
                                                     reduction, avg_factor)


@LOSSES.register_module()
class IoULoss(_OverlapLoss):
    """``1 - IoU`` (``mode='linear'``), ``1 - IoU^2`` (``'square'``) or ``-log(IoU)`` (``'log'``)."""

    def __init__(self, linear: bool = False, eps: float = 1e-6, reduction: str = 'mean',
                 loss_weight: float = 1.0, mode: str = 'log'):
        super().__init__(eps, reduction, loss_weight)
        if linear:
            mode = 'linear'
        if mode not in ('linear', 'square', 'log'):
            raise ValueError(f"IoULoss mode must be 'linear', 'square' or 'log', got {mode!r}")
        self.mode = mode

    def elementwise(self, pred, target):
        ious = bbox_overlaps(pred, target, is_aligned=True).clamp(min=self.eps)
        if self.mode == 'linear':
            return 1 - ious
        if self.mode == 'square':
            return 1 - ious ** 2
        return -ious.log()


@LOSSES.register_module()
class GIoULoss(_OverlapLoss):
    """``1 - GIoU`` (Rezatofighi et al.)."""

    def elementwise(self, pred, target):
        return 1 - bbox_overlaps(pred, target, mode='giou', is_aligned=True, eps=self.eps)
