"""Encode boxes as distances from a point to their four sides (FCOS, GFL)."""
from __future__ import annotations

import torch
from torch import Tensor

from detforge.registry import BBOX_CODERS

__all__ = ['DistancePointBBoxCoder', 'bbox2distance', 'distance2bbox']


def distance2bbox(points: Tensor, distance: Tensor, max_shape=None) -> Tensor:
    """``points (..., 2)`` ``(x, y)`` and ``distance (..., 4)`` ``(left, top, right, bottom)`` →
    ``(..., 4)`` xyxy boxes, clipped to ``max_shape`` ``(h, w)`` when given."""
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    if max_shape is not None:
        h, w = float(max_shape[0]), float(max_shape[1])
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                             boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], dim=-1)
    return boxes


def bbox2distance(points: Tensor, bbox: Tensor, max_dis: float | None = None, eps: float = 0.1) -> Tensor:
    """The inverse of :func:`distance2bbox`: ``(..., 4)`` distances ``(left, top, right,
    bottom)``, clamped to ``[0, max_dis - eps]`` when ``max_dis`` is given (GFL's bins)."""
    left = points[..., 0] - bbox[..., 0]
    top = points[..., 1] - bbox[..., 1]
    right = bbox[..., 2] - points[..., 0]
    bottom = bbox[..., 3] - points[..., 1]
    dist = torch.stack([left, top, right, bottom], dim=-1)
    if max_dis is not None:
        dist = dist.clamp(min=0, max=max_dis - eps)
    return dist


@BBOX_CODERS.register_module()
class DistancePointBBoxCoder:
    """Boxes as ``(left, top, right, bottom)`` distances from points, in the points' units.

    Args:
        clip_border: clip decoded boxes to ``max_shape``.
    """

    def __init__(self, clip_border: bool = True):
        self.clip_border = clip_border

    def encode(self, points: Tensor, gt_bboxes: Tensor, max_dis: float | None = None,
               eps: float = 0.1) -> Tensor:
        """``points (n, 2)``, ``gt_bboxes (n, 4)`` → distances ``(n, 4)``."""
        return bbox2distance(points, gt_bboxes, max_dis, eps)

    def decode(self, points: Tensor, pred_bboxes: Tensor, max_shape=None) -> Tensor:
        """``points (n, 2)``, distances ``(n, 4)`` → boxes ``(n, 4)``."""
        return distance2bbox(points, pred_bboxes, max_shape if self.clip_border else None)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(clip_border={self.clip_border})'
