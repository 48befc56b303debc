"""RTMDet's dynamic soft label assignment (Lyu et al., 2022; SimOTA's dynamic k with a soft
classification cost)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detforge.registry import BBOX_ASSIGNERS, IOU_CALCULATORS

from .assign_result import AssignResult

__all__ = ['DynamicSoftLabelAssigner']

_INF = 100000000
_EPS = 1.0e-7


@BBOX_ASSIGNERS.register_module()
class DynamicSoftLabelAssigner:
    """Match priors to ground truths by the cost of predicting them.

    Only priors whose point lies inside some ground truth take part. For each (prior, gt) pair:

        cost = soft classification cost (quality focal loss of the prior's scores against the
               gt's one-hot label times their IoU)
             + iou_weight * -log(IoU + 1e-7)
             + 10 ** (centre distance / stride - soft_center_radius)

    Each gt takes its ``k`` cheapest priors, ``k`` = the sum of its ``topk`` largest IoUs
    (at least 1, truncated to an integer); a prior taken by several gts keeps the cheapest.

    Args:
        soft_center_radius: the radius (in strides) where the centre cost reaches 1.
        topk: IoUs summed for the dynamic k.
        iou_weight: weight of the IoU cost.
        iou_calculator: IoU calculator config.
    """

    def __init__(self, soft_center_radius: float = 3.0, topk: int = 13, iou_weight: float = 3.0,
                 iou_calculator: dict = dict(type='BboxOverlaps2D')):
        self.soft_center_radius = soft_center_radius
        self.topk = topk
        self.iou_weight = iou_weight
        self.iou_calculator = IOU_CALCULATORS.build(iou_calculator)

    def assign(self, priors: Tensor, decoded_bboxes: Tensor, pred_scores: Tensor, gt_bboxes: Tensor,
               gt_labels: Tensor, gt_bboxes_ignore: Tensor | None = None) -> AssignResult:
        """Assign the priors of one image.

        Args:
            priors: ``(n, 4)`` ``(x, y, stride_w, stride_h)`` points.
            decoded_bboxes: ``(n, 4)`` the boxes the head predicts at them (xyxy pixels).
            pred_scores: ``(n, C)`` class logits.
            gt_bboxes: ``(k, 4)``; gt_labels: ``(k,)``. gt_bboxes_ignore: not used.

        Returns:
            :class:`AssignResult`: ``gt_inds (n,)`` (0 negative, i + 1 gt i), ``max_overlaps
            (n,)`` the IoU of each positive with its gt (``-1e8`` elsewhere; all 0 when no prior
            lies inside a gt), ``labels (n,)`` (-1 where not positive).
        """
        num_gt, n = gt_bboxes.size(0), priors.size(0)
        gt_inds = priors.new_zeros((n,), dtype=torch.long)
        labels = priors.new_full((n,), -1, dtype=torch.long)
        centres = priors[:, :2]
        deltas = torch.cat([centres[:, None] - gt_bboxes[None, :, :2], gt_bboxes[None, :, 2:] - centres[:, None]], -1)
        valid = (deltas.min(dim=-1).values > 0).any(dim=1) if num_gt else priors.new_zeros((n,), dtype=torch.bool)
        if num_gt == 0 or n == 0 or not valid.any():
            return AssignResult(num_gt, gt_inds, priors.new_zeros((n,)), labels=labels)

        cost, ious = self._cost(priors[valid], decoded_bboxes[valid], pred_scores[valid], gt_bboxes, gt_labels)
        matching = self._dynamic_k_matching(cost, ious)  # (v, k) bool, at most one gt per prior
        fg = matching.any(dim=1)
        matched_gt = matching.float().argmax(dim=1)
        valid_idx = valid.nonzero(as_tuple=True)[0]
        gt_inds[valid_idx[fg]] = matched_gt[fg] + 1
        labels[valid_idx[fg]] = gt_labels[matched_gt[fg]].long()
        max_overlaps = priors.new_full((n,), -_INF)
        max_overlaps[valid_idx[fg]] = (ious * matching).sum(dim=1)[fg]
        return AssignResult(num_gt, gt_inds, max_overlaps, labels=labels)

    def _cost(self, priors: Tensor, boxes: Tensor, scores: Tensor, gt_bboxes: Tensor,
              gt_labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(v, k)`` costs and IoUs of the valid priors against every gt."""
        gt_centre = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2.0
        distance = (priors[:, None, :2] - gt_centre[None]).pow(2).sum(-1).sqrt() / priors[:, 2:3]
        centre_cost = torch.pow(10, distance - self.soft_center_radius)
        ious = self.iou_calculator(boxes, gt_bboxes)
        iou_cost = -torch.log(ious + _EPS) * self.iou_weight
        soft_label = F.one_hot(gt_labels.long(), scores.size(-1)).to(scores.dtype)[None] * ious[..., None]  # (v, k, C)
        logits = scores[:, None, :].expand_as(soft_label)
        cls_cost = (F.binary_cross_entropy_with_logits(logits, soft_label, reduction='none')
                    * (soft_label - logits.sigmoid()).abs().pow(2.0)).sum(dim=-1)
        return cls_cost + iou_cost + centre_cost, ious

    def _dynamic_k_matching(self, cost: Tensor, ious: Tensor) -> Tensor:
        """``(v, k)`` bool: each gt's ``k_j`` cheapest priors, a prior shared by several gts
        kept by the cheapest."""
        k = min(self.topk, ious.size(0))
        dynamic_ks = torch.topk(ious, k, dim=0).values.sum(dim=0).int().clamp(min=1)
        matching = torch.zeros_like(cost, dtype=torch.bool)
        for j, kj in enumerate(dynamic_ks.tolist()):
            matching[torch.topk(cost[:, j], kj, largest=False).indices, j] = True
        shared = matching.sum(dim=1) > 1
        if shared.any():
            cheapest = cost[shared].argmin(dim=1)
            matching[shared] = F.one_hot(cheapest, cost.size(1)).bool()
        return matching

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(soft_center_radius={self.soft_center_radius}, topk={self.topk}, '
                f'iou_weight={self.iou_weight})')
