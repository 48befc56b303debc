"""IoU calculators: the registered face of :func:`detforge.structures.bbox_overlaps`."""
from __future__ import annotations

from torch import Tensor

from detforge.registry import IOU_CALCULATORS
from detforge.structures import bbox_overlaps

__all__ = ['BboxOverlaps2D']


@IOU_CALCULATORS.register_module()
class BboxOverlaps2D:
    """2-D box overlaps (``'iou'``, ``'iof'`` or ``'giou'``) between ``(m, 4)`` and ``(n, 4)``
    boxes; extra columns (e.g. scores in ``(n, 5)``) are ignored."""

    def __call__(self, bboxes1: Tensor, bboxes2: Tensor, mode: str = 'iou',
                 is_aligned: bool = False) -> Tensor:
        return bbox_overlaps(bboxes1[..., :4], bboxes2[..., :4], mode, is_aligned)

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'
