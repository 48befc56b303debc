"""Adaptive Training Sample Selection (Zhang et al., "Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection", CVPR 2020)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from detforge.registry import BBOX_ASSIGNERS, IOU_CALCULATORS, BuildError

from .assign_result import AssignResult

__all__ = ['ATSSAssigner']

_INF = 100000000


@BBOX_ASSIGNERS.register_module()
class ATSSAssigner:
    """For every ground truth:

    1. on each pyramid level, the ``topk`` priors whose centres are closest to the ground
       truth's centre (Euclidean distance) are candidates;
    2. the IoU threshold is the mean plus the (unbiased) standard deviation of the candidates'
       IoUs; a candidate at or above it is positive ...
    3. ... if its centre lies inside the ground truth (more than 0.01 px from every side).

    A prior positive for several ground truths goes to the one it overlaps most (the first of
    them on an exact tie, as ``torch.max`` returns). The others are negatives; priors whose
    intersection-over-foreground with an ignored box exceeds ``ignore_iof_thr`` are ignored
    (``-1``). Ties in the centre distance are broken by ``torch.topk``, as in MMDetection.

    Worked example: one level, priors whose centres lie at distances 0, 4, 4, 8 from a gt,
    ``topk=3``: the candidates are the first three; with IoUs 0.5, 0.3, 0.1 the threshold is
    ``0.3 + 0.2 = 0.5``, so only the first is positive.

    Args:
        topk: candidates per level and ground truth.
        iou_calculator: IoU calculator config.
        ignore_iof_thr: IoF threshold with ``gt_bboxes_ignore`` (``<= 0``: ignore nothing).
        alpha: DDOD's cost weighting (not supported: must be None).
    """

    def __init__(self, topk: int, iou_calculator: dict = dict(type='BboxOverlaps2D'),
                 ignore_iof_thr: float = -1, alpha: float | None = None):
        if alpha is not None:
            raise BuildError('ATSSAssigner(alpha=...) (DDOD) is not supported by detforge; leave alpha '
                             'unset', key_path=['alpha'])
        if int(topk) < 1:
            raise BuildError(f'ATSSAssigner topk must be >= 1, got {topk!r}', key_path=['topk'])
        self.topk = int(topk)
        self.iou_calculator = IOU_CALCULATORS.build(iou_calculator)
        self.ignore_iof_thr = ignore_iof_thr

    def assign(self, bboxes: Tensor, num_level_bboxes: Sequence[int], gt_bboxes: Tensor,
               gt_bboxes_ignore: Tensor | None = None, gt_labels: Tensor | None = None) -> AssignResult:
        """Assign the priors of one image.

        Args:
            bboxes: ``(n, 4)`` priors (anchors), level after level.
            num_level_bboxes: priors per level (sums to ``n``).
            gt_bboxes: ``(k, 4)``; ``gt_labels``: ``(k,)``; ``gt_bboxes_ignore``: ``(m, 4)``.

        Returns:
            :class:`AssignResult` with ``gt_inds (n,)`` (0 negative, -1 ignored, i + 1 gt i),
            ``max_overlaps (n,)`` (the IoU with the assigned gt; ``-100000000`` where none) and
            ``labels (n,)`` (-1 where not positive) when ``gt_labels`` is given.
        """
        bboxes = bboxes[:, :4]
        num_gt, num_bboxes = gt_bboxes.size(0), bboxes.size(0)
        gt_inds = bboxes.new_zeros((num_bboxes,), dtype=torch.long)
        if num_gt == 0 or num_bboxes == 0:
            labels = None if gt_labels is None else bboxes.new_full((num_bboxes,), -1, dtype=torch.long)
            return AssignResult(num_gt, gt_inds, bboxes.new_zeros((num_bboxes,)), labels=labels)

        overlaps = self.iou_calculator(bboxes, gt_bboxes)  # (n, k)
        distances = self._centre_distances(bboxes, gt_bboxes)  # (n, k)
        if (self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0):
            iof = self.iou_calculator(bboxes, gt_bboxes_ignore, mode='iof').max(dim=1).values
            ignored = iof > self.ignore_iof_thr
            distances[ignored, :] = _INF
            gt_inds[ignored] = -1

        candidates = self._topk_per_level(distances, num_level_bboxes)  # (sum topk_l, k)
        candidate_overlaps = overlaps.gather(0, candidates)
        threshold = candidate_overlaps.mean(0) + candidate_overlaps.std(0)  # (k,)
        is_pos = candidate_overlaps >= threshold[None, :]
        is_pos &= self._centres_inside(bboxes[candidates.reshape(-1)].reshape(*candidates.shape, 4), gt_bboxes)

        # keep the IoU of positive (candidate, gt) pairs only; a prior goes to its best gt
        masked = torch.full_like(overlaps, -_INF)
        pos_rows, pos_cols = candidates[is_pos], is_pos.nonzero(as_tuple=True)[1]
        masked[pos_rows, pos_cols] = overlaps[pos_rows, pos_cols]
        max_overlaps, argmax = masked.max(dim=1)
        matched = max_overlaps != -_INF
        gt_inds[matched] = argmax[matched] + 1
        labels = None
        if gt_labels is not None:
            labels = torch.where(matched, gt_labels[argmax].to(torch.long), -1)
        return AssignResult(num_gt, gt_inds, max_overlaps, labels=labels)

    @staticmethod
    def _centre_distances(bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """``(n, k)`` Euclidean distances between prior and gt centres."""
        prior_c = (bboxes[:, :2] + bboxes[:, 2:]) / 2.0
        gt_c = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2.0
        return (prior_c[:, None, :] - gt_c[None, :, :]).pow(2).sum(-1).sqrt()

    def _topk_per_level(self, distances: Tensor, num_level_bboxes: Sequence[int]) -> Tensor:
        """Indices ``(sum_l min(topk, n_l), k)`` of each gt's closest priors on every level."""
        out, start = [], 0
        for n_level in num_level_bboxes:
            n_level = int(n_level)
            if n_level > 0:
                k = min(self.topk, n_level)
                _, idx = distances[start:start + n_level].topk(k, dim=0, largest=False)
                out.append(idx + start)
            start += n_level
        return torch.cat(out, dim=0)

    @staticmethod
    def _centres_inside(candidate_boxes: Tensor, gt_bboxes: Tensor, margin: float = 0.01) -> Tensor:
        """``candidate_boxes (c, k, 4)`` → ``(c, k)`` bool: the centre is more than ``margin``
        pixels inside gt ``k``."""
        cx = (candidate_boxes[..., 0] + candidate_boxes[..., 2]) / 2.0
        cy = (candidate_boxes[..., 1] + candidate_boxes[..., 3]) / 2.0
        sides = torch.stack([cx - gt_bboxes[:, 0], cy - gt_bboxes[:, 1],
                             gt_bboxes[:, 2] - cx, gt_bboxes[:, 3] - cy], dim=-1)
        return sides.min(dim=-1).values > margin

    def __repr__(self) -> str:
        return f'{type(self).__name__}(topk={self.topk}, ignore_iof_thr={self.ignore_iof_thr})'
