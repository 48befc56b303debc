"""The outcome of assigning ground-truth boxes to candidate boxes (anchors or proposals)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ['AssignResult', 'gather_assigned']


class AssignResult:
    """Which ground truth each candidate box is matched to.

    Attributes:
        num_gts: number of ground-truth boxes ``k``.
        gt_inds: ``(n,)`` long; ``0`` negative (background), ``-1`` ignored, ``i + 1`` matched
            to ground truth ``i``.
        max_overlaps: ``(n,)`` IoU of each candidate with its best ground truth.
        labels: ``(n,)`` long class of the matched ground truth, ``-1`` where not positive; or
            None when no labels were given.
    """

    def __init__(self, num_gts: int, gt_inds: Tensor, max_overlaps: Tensor,
                 labels: Tensor | None = None):
        self.num_gts = num_gts
        self.gt_inds = gt_inds
        self.max_overlaps = max_overlaps
        self.labels = labels
        self._extra_properties: dict = {}

    @property
    def num_preds(self) -> int:
        return len(self.gt_inds)

    def set_extra_property(self, key: str, value) -> None:
        self._extra_properties[key] = value

    def get_extra_property(self, key: str):
        return self._extra_properties.get(key)

    def add_gt_(self, gt_labels: Tensor) -> None:
        """Put the ground truths themselves in front of the candidates, each matched to itself
        with overlap 1 (used when ground truths are added as proposals)."""
        self_inds = torch.arange(1, len(gt_labels) + 1, dtype=torch.long, device=gt_labels.device)
        self.gt_inds = torch.cat([self_inds, self.gt_inds])
        self.max_overlaps = torch.cat([self.max_overlaps.new_ones(len(gt_labels)), self.max_overlaps])
        if self.labels is not None:
            self.labels = torch.cat([gt_labels, self.labels])

    def __repr__(self) -> str:
        pos = int((self.gt_inds > 0).sum()) if self.gt_inds.numel() else 0
        return (f'{type(self).__name__}(num_gts={self.num_gts}, num_preds={self.num_preds}, '
                f'num_pos={pos})')


def gather_assigned(values: Sequence[Tensor], gt_inds: Tensor, fill: float = 0) -> Tensor:
    """Each candidate's value of its assigned ground truth: ``values`` per image ``(k_i, ...)``,
    ``gt_inds (B, n)`` → ``(B, n, ...)``; candidates without one get ``fill``."""
    k = max([len(v) for v in values] + [1])
    padded = values[0].new_full((len(values), k + 1, *values[0].shape[1:]), fill)  # slot 0: none
    for i, v in enumerate(values):
        padded[i, 1:len(v) + 1] = v
    index = gt_inds.clamp(min=0).reshape(*gt_inds.shape, *[1] * (padded.dim() - 2))
    return padded.gather(1, index.expand(*gt_inds.shape, *padded.shape[2:]))
