"""Cross-entropy: softmax over classes, or per-class sigmoid (binary)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detforge.registry import LOSSES

from .utils import check_reduction, weight_reduce_loss

__all__ = ['CrossEntropyLoss', 'cross_entropy', 'binary_cross_entropy', 'mask_cross_entropy']


def cross_entropy(pred: Tensor, label: Tensor, weight: Tensor | None = None, reduction: str = 'mean',
                  avg_factor: float | None = None, class_weight: Tensor | None = None,
                  ignore_index: int = -100, avg_non_ignore: bool = False) -> Tensor:
    """Softmax cross-entropy of ``pred (n, C)`` logits against ``label (n,)`` indices."""
    loss = F.cross_entropy(pred, label, weight=class_weight, reduction='none', ignore_index=ignore_index)
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        avg_factor = label.numel() - (label == ignore_index).sum().item()
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def binary_cross_entropy(pred: Tensor, label: Tensor, weight: Tensor | None = None,
                         reduction: str = 'mean', avg_factor: float | None = None,
                         class_weight: Tensor | None = None, ignore_index: int = -100,
                         avg_non_ignore: bool = False) -> Tensor:
    """Per-class sigmoid cross-entropy. ``label`` is ``(n,)`` class indices (``C`` or
    ``ignore_index`` = none of the classes) or the same shape as ``pred``."""
    if pred.dim() != label.dim():
        valid = (label >= 0) & (label != ignore_index)
        num_classes = pred.size(-1)
        target = torch.zeros_like(pred)
        idx = torch.nonzero(valid & (label < num_classes), as_tuple=False).squeeze(-1)
        target[idx, label[idx]] = 1
        valid_mask = valid.view(-1, 1).expand_as(pred).float()
        weight = valid_mask if weight is None else weight.view(-1, 1).expand_as(pred).float() * valid_mask
        label = target
    else:
        label = label.float()
        if weight is not None:
            weight = weight.float()
    if avg_factor is None and avg_non_ignore and reduction == 'mean' and weight is not None:
        avg_factor = weight.sum().item()
    loss = F.binary_cross_entropy_with_logits(pred, label, pos_weight=None, reduction='none')
    if class_weight is not None:
        loss = loss * class_weight
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def mask_cross_entropy(pred: Tensor, target: Tensor, label: Tensor, weight=None,
                       reduction: str = 'mean', avg_factor: float | None = None,
                       class_weight=None, ignore_index=None, **kwargs) -> Tensor:
    """Per-pixel sigmoid cross-entropy of the mask logits of each RoI's own class.

    Args:
        pred: ``(n, C, h, w)`` logits (``C = 1`` for a class-agnostic head).
        target: ``(n, h, w)`` 0/1 targets.
        label: ``(n,)`` class of each RoI (the channel of ``pred`` that is scored).
    Only ``reduction='mean'`` over all pixels, as MMDetection 2.x.
    """
    if reduction != 'mean' or avg_factor is not None:
        raise ValueError("mask_cross_entropy supports reduction='mean' without avg_factor only")
    inds = torch.arange(pred.size(0), device=pred.device)
    pred_slice = pred[inds, label.long()]
    return F.binary_cross_entropy_with_logits(pred_slice, target.float(), weight=class_weight,
                                              reduction='mean')


@LOSSES.register_module()
class CrossEntropyLoss(nn.Module):
    """Cross-entropy loss.

    Args:
        use_sigmoid: per-class binary cross-entropy instead of softmax.
        use_mask: mask loss (:func:`mask_cross_entropy`): ``forward(mask_pred, mask_targets,
            labels)``.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        class_weight: a weight per class.
        ignore_index: label value that contributes nothing.
        loss_weight: multiplier of the loss.
        avg_non_ignore: average over the non-ignored elements only.
    """

    def __init__(self, use_sigmoid: bool = False, use_mask: bool = False, reduction: str = 'mean',
                 class_weight: Sequence[float] | None = None, ignore_index: int | None = None,
                 loss_weight: float = 1.0, avg_non_ignore: bool = False):
        super().__init__()
        if use_mask and use_sigmoid:
            raise ValueError('CrossEntropyLoss: use_sigmoid and use_mask exclude each other')
        self.use_mask = use_mask
        self.use_sigmoid = use_sigmoid
        self.reduction = check_reduction(reduction)
        self.class_weight = list(class_weight) if class_weight is not None else None
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        self.avg_non_ignore = avg_non_ignore
        self.criterion = (mask_cross_entropy if use_mask else
                          binary_cross_entropy if use_sigmoid else cross_entropy)

    def forward(self, cls_score: Tensor, label: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None,
                ignore_index: int | None = None, **kwargs) -> Tensor:
        reduction = check_reduction(reduction_override) if reduction_override else self.reduction
        if ignore_index is None:
            ignore_index = self.ignore_index if self.ignore_index is not None else -100
        class_weight = (cls_score.new_tensor(self.class_weight) if self.class_weight is not None else None)
        return self.loss_weight * self.criterion(
            cls_score, label, weight, reduction=reduction, avg_factor=avg_factor,
            class_weight=class_weight, ignore_index=ignore_index, avg_non_ignore=self.avg_non_ignore)

    def extra_repr(self) -> str:
        return (f'use_sigmoid={self.use_sigmoid}, class_weight={self.class_weight}, '
                f'loss_weight={self.loss_weight}')
