"""Box operations on ``xyxy`` boxes in pixels (0-based; a box from 0 to 10 has width 10).

Everything here is vectorised over boxes and works on any device and float dtype.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = [
    'bbox_overlaps', 'bbox_area', 'bbox2roi', 'roi2bbox', 'bbox2result', 'bbox_flip',
    'bbox_mapping', 'bbox_mapping_back', 'bbox_rescale', 'bbox_clip', 'distance2bbox',
    'bbox2distance',
]


def bbox_area(boxes: Tensor) -> Tensor:
    """Areas of ``(..., 4)`` boxes, ``(...,)`` in square pixels (negative sizes count as 0)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def bbox_overlaps(bboxes1: Tensor, bboxes2: Tensor, mode: str = 'iou', is_aligned: bool = False,
                  eps: float = 1e-6) -> Tensor:
    """Overlaps between two sets of boxes.

    Args:
        bboxes1: ``(..., m, 4)`` boxes.
        bboxes2: ``(..., n, 4)`` boxes (``n == m`` when ``is_aligned``).
        mode: ``'iou'`` (intersection over union), ``'iof'`` (intersection over the area of
            ``bboxes1``: how much of each box of the first set lies inside one of the second)
            or ``'giou'`` (generalised IoU, in ``[-1, 1]``).
        is_aligned: compare ``bboxes1[i]`` with ``bboxes2[i]`` only.
        eps: added to denominators so that empty boxes give 0 and not NaN.

    Returns:
        ``(..., m, n)``, or ``(..., m)`` when ``is_aligned``.

    Example::

        >>> a = torch.tensor([[0., 0., 10., 10.]]); b = torch.tensor([[0., 0., 10., 20.]])
        >>> bbox_overlaps(a, b)            # 100 / 200
        tensor([[0.5000]])
        >>> bbox_overlaps(a, b, mode='iof')  # all of a is inside b
        tensor([[1.0000]])
    """
    if mode not in ('iou', 'iof', 'giou'):
        raise ValueError(f"mode must be 'iou', 'iof' or 'giou', got {mode!r}")
    if bboxes1.shape[-1] != 4 or bboxes2.shape[-1] != 4:
        raise ValueError(f'boxes must have 4 coordinates in the last dimension, got shapes '
                         f'{tuple(bboxes1.shape)} and {tuple(bboxes2.shape)}')
    if is_aligned and bboxes1.shape[:-1] != bboxes2.shape[:-1]:
        raise ValueError(f'is_aligned needs boxes of the same shape, got {tuple(bboxes1.shape)} '
                         f'and {tuple(bboxes2.shape)}')
    rows, cols = bboxes1.shape[-2], bboxes2.shape[-2]
    batch = bboxes1.shape[:-2]
    if rows * cols == 0 or (is_aligned and rows == 0):
        shape = batch + ((rows,) if is_aligned else (rows, cols))
        return bboxes1.new_zeros(shape)

    # the common case (plain 2-D IoU, positive-size boxes) is torchvision's kernel
    if mode == 'iou' and not is_aligned and bboxes1.dim() == 2 and bboxes2.dim() == 2 and eps <= 1e-6:
        iou = box_iou(bboxes1, bboxes2)
        return torch.nan_to_num(iou, nan=0.0)

    area1 = bbox_area(bboxes1)
    area2 = bbox_area(bboxes2)
    if is_aligned:
        lt = torch.max(bboxes1[..., :2], bboxes2[..., :2])
        rb = torch.min(bboxes1[..., 2:], bboxes2[..., 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        union = area1 + area2 - overlap if mode in ('iou', 'giou') else area1
        if mode == 'giou':
            enclosed_lt = torch.min(bboxes1[..., :2], bboxes2[..., :2])
            enclosed_rb = torch.max(bboxes1[..., 2:], bboxes2[..., 2:])
    else:
        lt = torch.max(bboxes1[..., :, None, :2], bboxes2[..., None, :, :2])
        rb = torch.min(bboxes1[..., :, None, 2:], bboxes2[..., None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        union = (area1[..., None] + area2[..., None, :] - overlap) if mode in ('iou', 'giou') \
            else area1[..., None].expand_as(overlap)
        if mode == 'giou':
            enclosed_lt = torch.min(bboxes1[..., :, None, :2], bboxes2[..., None, :, :2])
            enclosed_rb = torch.max(bboxes1[..., :, None, 2:], bboxes2[..., None, :, 2:])
    union = union.clamp(min=eps)
    ious = overlap / union
    if mode != 'giou':
        return ious
    enclose_wh = (enclosed_rb - enclosed_lt).clamp(min=0)
    enclose_area = (enclose_wh[..., 0] * enclose_wh[..., 1]).clamp(min=eps)
    return ious - (enclose_area - union) / enclose_area


def bbox_clip(boxes: Tensor, max_shape: Sequence[int]) -> Tensor:
    """Clip ``(..., 4)`` boxes to an image of ``max_shape = (h, w, ...)``."""
    h, w = max_shape[0], max_shape[1]
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def bbox2roi(bbox_list: Sequence[Tensor]) -> Tensor:
    """Boxes of a batch, one ``(n_i, 4+)`` tensor per image, as ``(sum n_i, 5)`` RoIs
    ``[batch_idx, x1, y1, x2, y2]`` (the layout of ``torchvision.ops.roi_align``)."""
    rois = []
    for img_id, bboxes in enumerate(bbox_list):
        idx = bboxes.new_full((bboxes.size(0), 1), img_id)
        rois.append(torch.cat([idx, bboxes[:, :4]], dim=-1))
    if not rois:
        return torch.zeros((0, 5))
    return torch.cat(rois, 0)


def roi2bbox(rois: Tensor) -> list[Tensor]:
    """Inverse of :func:`bbox2roi`: a list of ``(n_i, 4)`` boxes, one per image index present
    (images ``0 .. max index``; an image without RoIs gets an empty tensor)."""
    if rois.numel() == 0:
        return []
    img_ids = rois[:, 0].long()
    return [rois[img_ids == i, 1:] for i in range(int(img_ids.max()) + 1)]


def bbox2result(bboxes: Tensor | np.ndarray, labels: Tensor | np.ndarray,
                num_classes: int) -> list[np.ndarray]:
    """Detections ``(n, 5)`` ``[x1, y1, x2, y2, score]`` with labels ``(n,)`` as a list over
    classes of float32 numpy arrays ``(k, 5)`` (the MMDetection result format)."""
    if isinstance(bboxes, torch.Tensor):
        bboxes = bboxes.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    bboxes = np.asarray(bboxes, dtype=np.float32).reshape(-1, 5)
    labels = np.asarray(labels).reshape(-1)
    return [bboxes[labels == i, :] for i in range(num_classes)]


def bbox_flip(bboxes: Tensor, img_shape: Sequence[int], direction: str = 'horizontal') -> Tensor:
    """Flip ``(..., 4*k)`` boxes inside an image of ``img_shape = (h, w, ...)``."""
    if bboxes.shape[-1] % 4 != 0:
        raise ValueError(f'boxes must have 4*k coordinates, got shape {tuple(bboxes.shape)}')
    h, w = img_shape[0], img_shape[1]
    flipped = bboxes.clone()
    if direction in ('horizontal', 'diagonal'):
        flipped[..., 0::4] = w - bboxes[..., 2::4]
        flipped[..., 2::4] = w - bboxes[..., 0::4]
    if direction in ('vertical', 'diagonal'):
        flipped[..., 1::4] = h - bboxes[..., 3::4]
        flipped[..., 3::4] = h - bboxes[..., 1::4]
    if direction not in ('horizontal', 'vertical', 'diagonal'):
        raise ValueError(f"direction must be 'horizontal', 'vertical' or 'diagonal', got {direction!r}")
    return flipped


def _scale_tensor(scale_factor, like: Tensor) -> Tensor:
    scale = torch.as_tensor(np.asarray(scale_factor, dtype=np.float32), device=like.device,
                            dtype=like.dtype).reshape(-1)
    if scale.numel() == 1:
        scale = scale.repeat(4)
    return scale


def bbox_mapping(bboxes: Tensor, img_shape, scale_factor, flip: bool,
                 flip_direction: str = 'horizontal') -> Tensor:
    """Map boxes from the original image to an augmented one (scale, then flip)."""
    new = bboxes * _scale_tensor(scale_factor, bboxes)
    if flip:
        new = bbox_flip(new, img_shape, flip_direction)
    return new


def bbox_mapping_back(bboxes: Tensor, img_shape, scale_factor, flip: bool,
                      flip_direction: str = 'horizontal') -> Tensor:
    """Map boxes predicted on an augmented image (of ``img_shape``) back to the original."""
    new = bbox_flip(bboxes, img_shape, flip_direction) if flip else bboxes
    return new.reshape(-1, 4) / _scale_tensor(scale_factor, bboxes)


def bbox_rescale(bboxes: Tensor, scale_factor: float = 1.0) -> Tensor:
    """Scale ``(n, 4)`` boxes (or ``(n, 5)`` RoIs) about their centres by ``scale_factor``."""
    if bboxes.size(1) == 5:
        inds, boxes = bboxes[:, :1], bboxes[:, 1:]
    else:
        inds, boxes = None, bboxes
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    w = (boxes[:, 2] - boxes[:, 0]) * scale_factor
    h = (boxes[:, 3] - boxes[:, 1]) * scale_factor
    out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    return out if inds is None else torch.cat([inds, out], dim=-1)


def distance2bbox(points: Tensor, distance: Tensor, max_shape=None) -> Tensor:
    """Points ``(n, 2)`` and distances ``(n, 4)`` to (left, top, right, bottom) as boxes."""
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    boxes = torch.stack([x1, y1, x2, y2], -1)
    return bbox_clip(boxes, max_shape) if max_shape is not None else boxes


def bbox2distance(points: Tensor, bbox: Tensor, max_dis: float | None = None, eps: float = 0.1) -> Tensor:
    """Inverse of :func:`distance2bbox`."""
    d = torch.stack([points[..., 0] - bbox[..., 0], points[..., 1] - bbox[..., 1],
                     bbox[..., 2] - points[..., 0], bbox[..., 3] - points[..., 1]], -1)
    if max_dis is not None:
        d = d.clamp(min=0, max=max_dis - eps)
    return d
