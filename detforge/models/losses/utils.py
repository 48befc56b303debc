"""Reduction helpers shared by the losses."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['reduce_loss', 'weight_reduce_loss']

_REDUCTIONS = ('none', 'mean', 'sum')


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """``'none'`` keeps the elements, ``'mean'`` averages them, ``'sum'`` adds them."""
    if reduction == 'none':
        return loss
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'sum':
        return loss.sum()
    raise ValueError(f'reduction must be one of {_REDUCTIONS}, got {reduction!r}')


def weight_reduce_loss(loss: Tensor, weight: Tensor | None = None, reduction: str = 'mean',
                       avg_factor: float | Tensor | None = None) -> Tensor:
    """Multiply element-wise losses by ``weight``, then reduce.

    With ``avg_factor``, ``'mean'`` divides the sum by ``avg_factor`` instead of the number of
    elements (e.g. by the number of positive anchors); ``'sum'`` with an ``avg_factor`` is an error.
    """
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return reduce_loss(loss, reduction)
    if reduction == 'mean':
        # eps keeps an avg_factor of 0 (no positives) finite, as MMDetection does
        return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    if reduction == 'none':
        return loss
    raise ValueError('avg_factor can only be used with reduction="mean" or "none"')


def check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f'reduction must be one of {_REDUCTIONS}, got {reduction!r}')
    return reduction
