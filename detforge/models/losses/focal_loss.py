"""Sigmoid focal loss (Lin et al., RetinaNet)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detforge.registry import LOSSES

from .utils import check_reduction, weight_reduce_loss

__all__ = ['FocalLoss', 'sigmoid_focal_loss']


def sigmoid_focal_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None, gamma: float = 2.0,
                       alpha: float = 0.25, reduction: str = 'mean',
                       avg_factor: float | None = None) -> Tensor:
    """``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` per class, for ``pred (n, C)`` logits.

    ``target`` is either ``(n,)`` class indices in ``[0, C]`` (``C`` = background: all-zero
    one-hot) or ``(n, C)`` binary targets. ``weight`` is ``(n,)`` (per sample) or ``(n, C)``.
    """
    num_classes = pred.size(1)
    if target.dim() == 1:  # one-hot without F.one_hot, which reads the labels' range on the host
        target = target[:, None] == torch.arange(num_classes, device=target.device)
    target = target.type_as(pred)
    p = pred.sigmoid()
    ce = F.binary_cross_entropy_with_logits(pred, target, reduction='none')
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    if weight is not None and weight.dim() == 1:
        weight = weight.view(-1, 1)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@LOSSES.register_module()
class FocalLoss(nn.Module):
    """Focal loss on sigmoid outputs (the only form RetinaNet uses).

    Args:
        use_sigmoid: must be True (softmax focal loss is not provided).
        gamma: focusing parameter; 0 gives plain binary cross-entropy.
        alpha: weight of the positive class; a negative value disables it.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplier of the loss.
    """

    def __init__(self, use_sigmoid: bool = True, gamma: float = 2.0, alpha: float = 0.25,
                 reduction: str = 'mean', loss_weight: float = 1.0, activated: bool = False):
        super().__init__()
        if not use_sigmoid:
            raise ValueError('FocalLoss supports only use_sigmoid=True')
        if activated:
            raise ValueError('FocalLoss expects logits (activated=False)')
        self.use_sigmoid = use_sigmoid
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None) -> Tensor:
        reduction = check_reduction(reduction_override) if reduction_override else self.reduction
        return self.loss_weight * sigmoid_focal_loss(pred, target, weight, self.gamma, self.alpha,
                                                     reduction, avg_factor)

    def extra_repr(self) -> str:
        return f'gamma={self.gamma}, alpha={self.alpha}, loss_weight={self.loss_weight}'
