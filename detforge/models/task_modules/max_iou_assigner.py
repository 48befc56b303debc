"""Assign each candidate box to the ground truth it overlaps most, by IoU thresholds."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from detforge.registry import BBOX_ASSIGNERS, IOU_CALCULATORS, build_from_cfg

from .assign_result import AssignResult

__all__ = ['MaxIoUAssigner']


@BBOX_ASSIGNERS.register_module()
class MaxIoUAssigner:
    """Max-IoU matching of candidates (anchors, proposals) to ground truths.

    Each candidate gets one of:

    - ``-1`` ignore: its IoU lies between the negative and the positive threshold, or it
      overlaps an ignored region by more than ``ignore_iof_thr``;
    - ``0`` negative: max IoU ``< neg_iou_thr`` (or inside ``[low, high)`` when a pair);
    - ``i + 1`` positive: max IoU with gt ``i`` ``>= pos_iou_thr``.

    Then, with ``match_low_quality``, each ground truth claims the candidate(s) it overlaps
    most, if that IoU is ``>= min_pos_iou``, even below ``pos_iou_thr``, so that no box is left
    without a positive (all tied candidates when ``gt_max_assign_all``).

    Worked example (RetinaNet, ``pos_iou_thr=0.5, neg_iou_thr=0.4``): IoUs 0.7 → positive,
    0.45 → ignored, 0.3 → negative, unless 0.3 is the best any anchor reaches for some gt, in
    which case that anchor becomes positive for it.

    Args:
        pos_iou_thr: IoU at or above which a candidate is positive.
        neg_iou_thr: IoU below which it is negative; a ``(low, high)`` pair makes negatives only
            the candidates with ``low <= IoU < high``.
        min_pos_iou: the lowest IoU a low-quality match may have.
        gt_max_assign_all: give a gt all candidates tied at its best IoU, not just one.
        ignore_iof_thr: candidates covered by ``gt_bboxes_ignore`` by more than this (IoF) are
            ignored; ``-1`` disables.
        ignore_wrt_candidates: measure IoF relative to the candidate (True) or the ignore box.
        match_low_quality: enable the low-quality matches described above.
        gpu_assign_thr: accepted for MMDetection compatibility (all work stays on the device).
        iou_calculator: config of the overlap function.
    """

    def __init__(self, pos_iou_thr: float, neg_iou_thr: float | Sequence[float],
                 min_pos_iou: float = 0., gt_max_assign_all: bool = True,
                 ignore_iof_thr: float = -1, ignore_wrt_candidates: bool = True,
                 match_low_quality: bool = True, gpu_assign_thr: int = -1,
                 iou_calculator: dict = dict(type='BboxOverlaps2D')):
        if isinstance(neg_iou_thr, (list, tuple)) and len(neg_iou_thr) != 2:
            raise ValueError(f'neg_iou_thr must be a float or a (low, high) pair, got {neg_iou_thr!r}')
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = tuple(neg_iou_thr) if isinstance(neg_iou_thr, (list, tuple)) else neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality
        self.gpu_assign_thr = gpu_assign_thr
        self.iou_calculator = build_from_cfg(iou_calculator, IOU_CALCULATORS)

    def assign(self, bboxes: Tensor, gt_bboxes: Tensor, gt_bboxes_ignore: Tensor | None = None,
               gt_labels: Tensor | None = None) -> AssignResult:
        """Match ``bboxes (n, 4)`` to ``gt_bboxes (k, 4)``; see the class docstring."""
        bboxes = bboxes[:, :4]
        overlaps = self.iou_calculator(gt_bboxes, bboxes)  # (k, n)
        if (self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None
                and gt_bboxes_ignore.numel() > 0 and bboxes.numel() > 0):
            if self.ignore_wrt_candidates:
                ignore_overlaps = self.iou_calculator(bboxes, gt_bboxes_ignore, mode='iof')
                ignore_max = ignore_overlaps.max(dim=1).values
            else:
                ignore_overlaps = self.iou_calculator(gt_bboxes_ignore, bboxes, mode='iof')
                ignore_max = ignore_overlaps.max(dim=0).values
            overlaps[:, ignore_max > self.ignore_iof_thr] = -1
        return self.assign_wrt_overlaps(overlaps, gt_labels)

    def assign_wrt_overlaps(self, overlaps: Tensor, gt_labels: Tensor | None = None) -> AssignResult:
        """Assign from a ``(k, n)`` overlap matrix (``-1`` marks candidates to ignore)."""
        num_gts, num_bboxes = overlaps.shape
        assigned = overlaps.new_full((num_bboxes,), -1, dtype=torch.long)

        if num_gts == 0 or num_bboxes == 0:
            max_overlaps = overlaps.new_zeros((num_bboxes,))
            if num_gts == 0:
                assigned[:] = 0  # no ground truth: everything is background
            labels = None if gt_labels is None else overlaps.new_full((num_bboxes,), -1, dtype=torch.long)
            return AssignResult(num_gts, assigned, max_overlaps, labels)

        max_overlaps, argmax_overlaps = overlaps.max(dim=0)          # best gt per candidate
        gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)    # best candidate per gt

        if isinstance(self.neg_iou_thr, tuple):
            low, high = self.neg_iou_thr
            negative = (max_overlaps >= low) & (max_overlaps < high)
        else:
            negative = (max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)
        assigned[negative] = 0

        positive = max_overlaps >= self.pos_iou_thr
        assigned[positive] = argmax_overlaps[positive] + 1

        if self.match_low_quality:
            # gts are processed in order, so a candidate that is the best of several gts ends
            # up with the last of them (as MMDetection does); vectorised as "last gt wins"
            qualifies = gt_max_overlaps >= self.min_pos_iou  # (k,)
            if self.gt_max_assign_all:
                is_best = (overlaps == gt_max_overlaps[:, None]) & qualifies[:, None]  # (k, n)
            else:
                is_best = torch.zeros_like(overlaps, dtype=torch.bool)
                rows = torch.arange(num_gts, device=overlaps.device)
                is_best[rows, gt_argmax_overlaps] = qualifies
            claimed = is_best.any(dim=0)
            gt_idx = torch.arange(1, num_gts + 1, device=overlaps.device)[:, None]
            last_gt = (is_best.long() * gt_idx).max(dim=0).values
            assigned = torch.where(claimed, last_gt, assigned)

        labels = None
        if gt_labels is not None:
            labels = assigned.new_full((num_bboxes,), -1)
            pos = assigned > 0
            labels[pos] = gt_labels[assigned[pos] - 1]
        return AssignResult(num_gts, assigned, max_overlaps, labels)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, '
                f'min_pos_iou={self.min_pos_iou}, match_low_quality={self.match_low_quality})')
