"""Assign each candidate box to the ground truth it overlaps most, by IoU thresholds."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from detforge.registry import BBOX_ASSIGNERS, IOU_CALCULATORS, build_from_cfg

from .assign_result import AssignResult
from .base_assigner import BaseAssigner

__all__ = ['MaxIoUAssigner']

LOW_QUALITY_GT_RULES = ('last', 'best')


@BBOX_ASSIGNERS.register_module()
class MaxIoUAssigner(BaseAssigner):
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
        low_quality_gt: which gt a candidate claimed by low-quality matching is assigned to.
            ``'last'`` (MMDetection 2.x): the last of the gts that claim it (its loop over gts
            overwrites). ``'best'`` (torchvision's ``Matcher(allow_low_quality_matches=True)``):
            the gt the candidate overlaps most, whichever gts claim it. They differ when a
            candidate is the best of a gt it overlaps less than another gt, or the best of
            several gts.
        gpu_assign_thr: accepted for MMDetection compatibility (all work stays on the device).
        iou_calculator: config of the overlap function.
    """

    max_batch_elements = 2 ** 24  # largest (B, k, n) overlap matrix of assign_batch

    def __init__(self, pos_iou_thr: float, neg_iou_thr: float | Sequence[float],
                 min_pos_iou: float = 0., gt_max_assign_all: bool = True,
                 ignore_iof_thr: float = -1, ignore_wrt_candidates: bool = True,
                 match_low_quality: bool = True, gpu_assign_thr: int = -1,
                 iou_calculator: dict = dict(type='BboxOverlaps2D'), low_quality_gt: str = 'last'):
        if low_quality_gt not in LOW_QUALITY_GT_RULES:
            raise ValueError(f'low_quality_gt must be one of {LOW_QUALITY_GT_RULES}, got {low_quality_gt!r}')
        if isinstance(neg_iou_thr, (list, tuple)) and len(neg_iou_thr) != 2:
            raise ValueError(f'neg_iou_thr must be a float or a (low, high) pair, got {neg_iou_thr!r}')
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = tuple(neg_iou_thr) if isinstance(neg_iou_thr, (list, tuple)) else neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality
        self.low_quality_gt = low_quality_gt
        self.gpu_assign_thr = gpu_assign_thr
        self.iou_calculator = build_from_cfg(iou_calculator, IOU_CALCULATORS)

    def assign(self, bboxes: Tensor, gt_bboxes: Tensor, gt_bboxes_ignore: Tensor | None = None,
               gt_labels: Tensor | None = None) -> AssignResult:
        """Match ``bboxes (n, 4)`` to ``gt_bboxes (k, 4)``; see the class docstring."""
        bboxes = bboxes[:, :4]
        overlaps = self.iou_calculator(gt_bboxes, bboxes)  # (k, n)
        if (self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None
                and gt_bboxes_ignore.numel() > 0 and bboxes.numel() > 0):
            overlaps[:, self._ignored(bboxes, gt_bboxes_ignore)] = -1
        return self.assign_wrt_overlaps(overlaps, gt_labels)

    def assign_wrt_overlaps(self, overlaps: Tensor, gt_labels: Tensor | None = None) -> AssignResult:
        """Assign from a ``(k, n)`` overlap matrix (``-1`` marks candidates to ignore)."""
        num_gts, num_bboxes = overlaps.shape
        if num_gts == 0 or num_bboxes == 0:
            assigned = overlaps.new_full((num_bboxes,), 0 if num_gts == 0 else -1, dtype=torch.long)
            labels = None if gt_labels is None else overlaps.new_full((num_bboxes,), -1, dtype=torch.long)
            return AssignResult(num_gts, assigned, overlaps.new_zeros((num_bboxes,)), labels)

        assigned, max_overlaps = self._match(overlaps[None], overlaps.new_ones((1, num_gts), dtype=torch.bool))
        assigned, max_overlaps = assigned[0], max_overlaps[0]
        labels = None
        if gt_labels is not None:
            labels = assigned.new_full((num_bboxes,), -1)
            pos = assigned > 0
            labels[pos] = gt_labels[assigned[pos] - 1]
        return AssignResult(num_gts, assigned, max_overlaps, labels)

    def assign_batch(self, priors: Tensor, valid: Tensor, gt_bboxes_list: Sequence[Tensor],
                     gt_bboxes_ignore_list: Sequence[Tensor | None] | None = None) -> tuple[Tensor, Tensor]:
        """Match the priors shared by a batch to each image's ground truths, all images at once.

        Args:
            priors: ``(n, 4)`` anchors, the same for every image.
            valid: ``(B, n)`` bool; priors that are not valid in an image are ignored there.
            gt_bboxes_list: per image ``(k_i, 4)``.
            gt_bboxes_ignore_list: per image ``(m_i, 4)`` regions to ignore, or None.

        Returns:
            ``gt_inds (B, n)`` long, as :attr:`AssignResult.gt_inds` of :meth:`assign` on the
            image's valid priors (``-1`` also where not valid), and ``max_overlaps (B, n)``
            (``0`` where not valid).

        The ground truths are padded to the largest count ``k`` of the batch, so one ``(B, k, n)``
        overlap matrix holds the batch; a batch whose matrix would exceed ``max_batch_elements``
        is assigned one image at a time.
        """
        B, n = valid.shape
        k = max((len(g) for g in gt_bboxes_list), default=0)
        if B > 1 and B * k * n > self.max_batch_elements:
            out = [self.assign_batch(priors, valid[i:i + 1], gt_bboxes_list[i:i + 1],
                                     None if gt_bboxes_ignore_list is None else gt_bboxes_ignore_list[i:i + 1])
                   for i in range(B)]
            return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])

        priors = priors[:, :4]
        overlaps = priors.new_full((B, max(k, 1), n), -1.)  # padding gts overlap nothing
        gt_valid = torch.zeros((B, max(k, 1)), dtype=torch.bool, device=priors.device)
        for i, gt in enumerate(gt_bboxes_list):  # one overlap kernel per image; no host sync
            overlaps[i, :len(gt)] = self.iou_calculator(gt.to(priors.dtype), priors)
            gt_valid[i, :len(gt)] = True
            ignore = gt_bboxes_ignore_list[i] if gt_bboxes_ignore_list is not None else None
            if self.ignore_iof_thr > 0 and ignore is not None and ignore.numel() > 0 and len(gt):
                overlaps[i].masked_fill_(self._ignored(priors, ignore.to(priors.dtype)), -1)
        overlaps.masked_fill_(~valid[:, None, :], -1)
        assigned, max_overlaps = self._match(overlaps, gt_valid)
        no_gt = ~gt_valid.any(dim=1, keepdim=True)  # such an image is all background
        assigned = torch.where(no_gt, 0, assigned).masked_fill_(~valid, -1)
        return assigned, max_overlaps.masked_fill(no_gt | ~valid, 0)

    def _ignored(self, bboxes: Tensor, gt_bboxes_ignore: Tensor) -> Tensor:
        """``(n,)`` bool: candidates covered by an ignored region by more than ``ignore_iof_thr``."""
        if self.ignore_wrt_candidates:
            ignore_max = self.iou_calculator(bboxes, gt_bboxes_ignore, mode='iof').max(dim=1).values
        else:
            ignore_max = self.iou_calculator(gt_bboxes_ignore, bboxes, mode='iof').max(dim=0).values
        return ignore_max > self.ignore_iof_thr

    def _match(self, overlaps: Tensor, gt_valid: Tensor) -> tuple[Tensor, Tensor]:
        """The thresholds and low-quality matches on ``overlaps (B, k, n)`` of the ``gt_valid
        (B, k)`` ground truths (padding rows are all ``-1``): ``(gt_inds (B, n), max_overlaps (B, n))``."""
        max_overlaps, argmax_overlaps = overlaps.max(dim=1)          # best gt per candidate
        gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=2)    # best candidate per gt

        if isinstance(self.neg_iou_thr, tuple):
            low, high = self.neg_iou_thr
            negative = (max_overlaps >= low) & (max_overlaps < high)
        else:
            negative = (max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)
        assigned = torch.where(negative, 0, -1)

        positive = max_overlaps >= self.pos_iou_thr
        assigned = torch.where(positive, argmax_overlaps + 1, assigned)

        if self.match_low_quality:
            # gts are processed in order, so a candidate that is the best of several gts ends
            # up with the last of them (as MMDetection does); vectorised as "last gt wins"
            qualifies = (gt_max_overlaps >= self.min_pos_iou) & gt_valid  # (B, k)
            if self.gt_max_assign_all:
                is_best = (overlaps == gt_max_overlaps[..., None]) & qualifies[..., None]  # (B, k, n)
            else:
                is_best = torch.zeros_like(overlaps, dtype=torch.bool)
                is_best.scatter_(2, gt_argmax_overlaps[..., None], qualifies[..., None])
            if self.low_quality_gt == 'last':
                gt_idx = torch.arange(1, overlaps.shape[1] + 1, device=overlaps.device)[:, None]
                claimed_by = (is_best.long() * gt_idx).max(dim=1).values
            else:  # torchvision: the candidate keeps its own best gt
                claimed_by = argmax_overlaps + 1
            assigned = torch.where(is_best.any(dim=1), claimed_by, assigned)
        return assigned, max_overlaps

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, '
                f'min_pos_iou={self.min_pos_iou}, match_low_quality={self.match_low_quality}, '
                f'low_quality_gt={self.low_quality_gt!r})')
