"""The base of the box assigners: one image (``assign``) and a batch (``assign_batch``)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .assign_result import AssignResult

__all__ = ['BaseAssigner']


class BaseAssigner:
    """An assigner matches candidate boxes to ground truths: :meth:`assign` for one image
    (MMDetection 2.x's interface); :meth:`assign_batch` for the priors shared by a batch
    (the dense heads' entry point), here :meth:`assign` image by image. An assigner that
    can do the batch at once (:class:`MaxIoUAssigner`) overrides :meth:`assign_batch`.
    """

    def assign(self, bboxes: Tensor, gt_bboxes: Tensor, gt_bboxes_ignore: Tensor | None = None,
               gt_labels: Tensor | None = None) -> AssignResult:
        """Match ``bboxes (n, 4)`` to ``gt_bboxes (k, 4)``."""
        raise NotImplementedError

    def assign_batch(self, priors: Tensor, valid: Tensor, gt_bboxes_list: Sequence[Tensor],
                     gt_bboxes_ignore_list: Sequence[Tensor | None] | None = None
                     ) -> tuple[Tensor, Tensor]:
        """Match the priors shared by a batch to each image's ground truths.

        Args:
            priors: ``(n, 4)`` anchors, the same for every image.
            valid: ``(B, n)`` bool; priors that are not valid in an image are ignored there.
            gt_bboxes_list: per image ``(k_i, 4)``.
            gt_bboxes_ignore_list: per image ``(m_i, 4)`` regions to ignore, or None.

        Returns:
            ``gt_inds (B, n)`` long, as :attr:`AssignResult.gt_inds` of :meth:`assign` on the
            image's valid priors (``-1`` also where not valid), and ``max_overlaps (B, n)``
            (``0`` where not valid).
        """
        gt_inds = torch.full(valid.shape, -1, dtype=torch.long, device=priors.device)
        max_overlaps = priors.new_zeros(valid.shape)
        for i, gt in enumerate(gt_bboxes_list):
            idx = torch.nonzero(valid[i], as_tuple=False).squeeze(-1)
            ignore = gt_bboxes_ignore_list[i] if gt_bboxes_ignore_list is not None else None
            result = self.assign(priors[idx], gt, ignore)
            gt_inds[i, idx] = result.gt_inds
            max_overlaps[i, idx] = result.max_overlaps
        return gt_inds, max_overlaps
