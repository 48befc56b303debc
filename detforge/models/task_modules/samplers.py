"""Samplers: choose which assigned candidates train the head (positives and negatives)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from detforge.registry import BBOX_SAMPLERS

from .assign_result import AssignResult

__all__ = ['SamplingResult', 'BaseSampler', 'PseudoSampler', 'RandomSampler']


class SamplingResult:
    """The positives and negatives chosen from one image's candidates.

    Attributes:
        pos_inds, neg_inds: ``(p,)``, ``(q,)`` long indices into the candidates (including the
            ground truths put in front of them when added as proposals).
        pos_bboxes, neg_bboxes: ``(p, 4)``, ``(q, 4)`` the chosen candidates.
        pos_gt_bboxes: ``(p, 4)`` the ground truth each positive is matched to.
        pos_gt_labels: ``(p,)`` its class (None without labels).
        pos_assigned_gt_inds: ``(p,)`` 0-based index of that ground truth.
        pos_is_gt: ``(p,)`` uint8, 1 where the positive is a ground truth added as proposal.
        num_gts: number of ground truths.
    """

    def __init__(self, pos_inds: Tensor, neg_inds: Tensor, bboxes: Tensor, gt_bboxes: Tensor,
                 assign_result: AssignResult, gt_flags: Tensor):
        self.pos_inds = pos_inds
        self.neg_inds = neg_inds
        self.pos_bboxes = bboxes[pos_inds]
        self.neg_bboxes = bboxes[neg_inds]
        self.pos_is_gt = gt_flags[pos_inds]
        self.num_gts = gt_bboxes.shape[0]
        self.pos_assigned_gt_inds = assign_result.gt_inds[pos_inds] - 1
        if gt_bboxes.numel() == 0:
            assert self.pos_assigned_gt_inds.numel() == 0
            self.pos_gt_bboxes = gt_bboxes.new_zeros((0, 4))
        else:
            self.pos_gt_bboxes = gt_bboxes.view(-1, 4)[self.pos_assigned_gt_inds]
        self.pos_gt_labels = (assign_result.labels[pos_inds]
                              if assign_result.labels is not None else None)

    @property
    def bboxes(self) -> Tensor:
        """Positives then negatives, ``(p + q, 4)``."""
        return torch.cat([self.pos_bboxes, self.neg_bboxes])

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_pos={len(self.pos_inds)}, num_neg={len(self.neg_inds)}, '
                f'num_gts={self.num_gts})')


class BaseSampler:
    """A sampler chooses which assigned candidates train a head: :meth:`sample` for one image
    (MMDetection 2.x's interface); :meth:`sample_batch` for a batch of assignments of shared
    priors (the dense heads' entry point), here :meth:`sample` image by image. A sampler that
    can do the batch at once (:class:`PseudoSampler`) overrides :meth:`sample_batch`."""

    def sample(self, assign_result: AssignResult, bboxes: Tensor, gt_bboxes: Tensor,
               gt_labels: Tensor | None = None, **kwargs) -> SamplingResult:
        raise NotImplementedError

    def sample_batch(self, gt_inds: Tensor, max_overlaps: Tensor, priors: Tensor,
                     gt_bboxes_list: Sequence[Tensor], gt_labels_list: Sequence[Tensor] | None = None
                     ) -> tuple[Tensor, Tensor]:
        """The sampled positives and negatives of a batch.

        Args:
            gt_inds: ``(B, n)`` assignments of the shared ``priors (n, 4)`` (as
                :attr:`AssignResult.gt_inds`); max_overlaps: ``(B, n)``.
            gt_bboxes_list: per image ``(k_i, 4)``; gt_labels_list: per image ``(k_i,)`` or None.

        Returns:
            ``(pos, neg)``, ``(B, n)`` bool masks.
        """
        pos = torch.zeros_like(gt_inds, dtype=torch.bool)
        neg = torch.zeros_like(gt_inds, dtype=torch.bool)
        for i, gt in enumerate(gt_bboxes_list):
            gt_labels = gt_labels_list[i] if gt_labels_list is not None else None
            result = self.sample(AssignResult(len(gt), gt_inds[i], max_overlaps[i]), priors, gt, gt_labels)
            pos[i, result.pos_inds] = True
            neg[i, result.neg_inds] = True
        return pos, neg


@BBOX_SAMPLERS.register_module()
class PseudoSampler(BaseSampler):
    """Take every positive and every negative (dense heads with focal loss need no sampling)."""

    def __init__(self, **kwargs):
        pass

    def sample(self, assign_result: AssignResult, bboxes: Tensor, gt_bboxes: Tensor,
               gt_labels: Tensor | None = None, **kwargs) -> SamplingResult:
        pos_inds = torch.nonzero(assign_result.gt_inds > 0, as_tuple=False).squeeze(-1)
        neg_inds = torch.nonzero(assign_result.gt_inds == 0, as_tuple=False).squeeze(-1)
        gt_flags = bboxes.new_zeros(bboxes.shape[0], dtype=torch.uint8)
        return SamplingResult(pos_inds, neg_inds, bboxes[:, :4], gt_bboxes, assign_result, gt_flags)

    def sample_batch(self, gt_inds: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Positives and negatives of a batch, ``(B, n)`` bool each: all of them, at once."""
        return gt_inds > 0, gt_inds == 0

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


@BBOX_SAMPLERS.register_module()
class RandomSampler(BaseSampler):
    """Sample ``num`` candidates at random, at most ``num * pos_fraction`` of them positive.

    Args:
        num: candidates per image.
        pos_fraction: the largest share of positives; negatives fill the rest.
        neg_pos_ub: at most this many negatives per positive (``-1``: no bound).
        add_gt_as_proposals: put the ground truths in front of the candidates first (two-stage
            heads: every gt is then a positive RoI).
    """

    def __init__(self, num: int, pos_fraction: float, neg_pos_ub: float = -1,
                 add_gt_as_proposals: bool = True):
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = add_gt_as_proposals

    @staticmethod
    def random_choice(inds: Tensor, num: int) -> Tensor:
        """``num`` distinct elements of ``inds`` drawn uniformly (torch's global RNG)."""
        if len(inds) <= num:
            return inds
        perm = torch.randperm(len(inds), device=inds.device)[:num]
        return inds[perm]

    def sample(self, assign_result: AssignResult, bboxes: Tensor, gt_bboxes: Tensor,
               gt_labels: Tensor | None = None, **kwargs) -> SamplingResult:
        bboxes = bboxes[:, :4]
        gt_flags = bboxes.new_zeros((bboxes.shape[0],), dtype=torch.uint8)
        if self.add_gt_as_proposals and len(gt_bboxes) > 0:
            if gt_labels is None:
                raise ValueError('gt_labels are needed to add the ground truths as proposals')
            bboxes = torch.cat([gt_bboxes[:, :4].to(bboxes.dtype), bboxes], dim=0)
            assign_result.add_gt_(gt_labels)
            gt_flags = torch.cat([bboxes.new_ones(gt_bboxes.shape[0], dtype=torch.uint8), gt_flags])

        num_expected_pos = int(self.num * self.pos_fraction)
        pos_all = torch.nonzero(assign_result.gt_inds > 0, as_tuple=False).squeeze(-1)
        pos_inds = self._sample_pos(pos_all, num_expected_pos, assign_result, bboxes, **kwargs)

        num_expected_neg = self.num - pos_inds.numel()
        if self.neg_pos_ub >= 0:
            neg_upper_bound = int(self.neg_pos_ub * max(1, pos_inds.numel()))
            num_expected_neg = min(num_expected_neg, neg_upper_bound)
        neg_all = torch.nonzero(assign_result.gt_inds == 0, as_tuple=False).squeeze(-1)
        neg_inds = self._sample_neg(neg_all, num_expected_neg, assign_result, bboxes, **kwargs)
        return SamplingResult(pos_inds, neg_inds, bboxes, gt_bboxes, assign_result, gt_flags)

    def _sample_pos(self, pos_all: Tensor, num: int, assign_result: AssignResult,
                    bboxes: Tensor, **kwargs) -> Tensor:
        """At most ``num`` of the positive indices ``pos_all``: here at random (subclasses
        choose otherwise, e.g. :class:`~.ohem_sampler.OHEMSampler` by loss)."""
        return self.random_choice(pos_all, num)

    def _sample_neg(self, neg_all: Tensor, num: int, assign_result: AssignResult,
                    bboxes: Tensor, **kwargs) -> Tensor:
        """At most ``num`` of the negative indices ``neg_all``, at random."""
        return self.random_choice(neg_all, num)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num={self.num}, pos_fraction={self.pos_fraction}, '
                f'neg_pos_ub={self.neg_pos_ub}, add_gt_as_proposals={self.add_gt_as_proposals})')
