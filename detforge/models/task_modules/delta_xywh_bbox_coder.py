"""Encode boxes as (dx, dy, dw, dh) offsets from reference boxes, and back (R-CNN's coder)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from detforge.registry import BBOX_CODERS

__all__ = ['DeltaXYWHBBoxCoder']


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(..., 4)`` x1y1x2y2 -> centre x, centre y, width, height, each ``(...)``.

    The centre is ``(x1 + x2) / 2`` as MMDetection's ``bbox2delta``/``delta2bbox`` compute it,
    not ``x1 + w / 2`` (torchvision's): the two round differently in float32, and a proposal
    one ulp (~4e-6 px at 500 px) off MMDetection's moves the RoI head's inputs and the order of
    equal-score proposals (measured against MMDetection 2.28, notes of issue 25)."""
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return (x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1


@BBOX_CODERS.register_module()
class DeltaXYWHBBoxCoder:
    """``dx = (gx - px) / pw``, ``dy = (gy - py) / ph``, ``dw = log(gw / pw)``,
    ``dh = log(gh / ph)`` (centres and sizes in pixels, no ``+1``), then
    ``(delta - target_means) / target_stds``.

    Args:
        target_means, target_stds: normalisation of the deltas (4 values each).
        clip_border: clip decoded boxes to ``max_shape``.
        add_ctr_clamp: clamp the decoded centre shift to ``ctr_clamp`` pixels.
        ctr_clamp: see above.
        clamp_shrink: also clamp ``dw, dh`` from below (boxes shrink at most
            ``1 / wh_ratio_clip`` times), as MMDetection 2.x; ``False`` clamps growth only, as
            torchvision's ``BoxCoder`` (the ``*_tv`` configs).
    """

    def __init__(self, target_means: Sequence[float] = (0., 0., 0., 0.),
                 target_stds: Sequence[float] = (1., 1., 1., 1.), clip_border: bool = True,
                 add_ctr_clamp: bool = False, ctr_clamp: int = 32, clamp_shrink: bool = True):
        if len(target_means) != 4 or len(target_stds) != 4:
            raise ValueError(f'target_means and target_stds need 4 values each, got '
                             f'{list(target_means)} and {list(target_stds)}')
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.clip_border = clip_border
        self.add_ctr_clamp = add_ctr_clamp
        self.ctr_clamp = ctr_clamp
        self.clamp_shrink = clamp_shrink

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Deltas ``(..., 4)`` that turn ``bboxes (..., 4)`` into ``gt_bboxes (..., 4)``."""
        if bboxes.shape[:-1] != gt_bboxes.shape[:-1]:
            raise ValueError(f'cannot encode boxes of shape {tuple(gt_bboxes.shape)} against '
                             f'{tuple(bboxes.shape)}')
        bboxes, gt_bboxes = bboxes[..., :4].float(), gt_bboxes[..., :4].float()
        px, py, pw, ph = _centre_size(bboxes)
        gx, gy, gw, gh = _centre_size(gt_bboxes)
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph,
                              torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        return (deltas - means) / stds

    def decode(self, bboxes: Tensor, pred_bboxes: Tensor, max_shape=None,
               wh_ratio_clip: float = 16 / 1000) -> Tensor:
        """Apply deltas ``(..., 4)`` to ``bboxes (..., 4)`` (broadcast); clip to ``max_shape``
        ``(h, w, ...)`` when ``clip_border``. Sizes grow at most ``1 / wh_ratio_clip`` times."""
        means = pred_bboxes.new_tensor(self.means)
        stds = pred_bboxes.new_tensor(self.stds)
        deltas = pred_bboxes * stds + means
        dx, dy, dw, dh = deltas.unbind(-1)
        px, py, pw, ph = _centre_size(bboxes)
        max_ratio = abs(math.log(wh_ratio_clip))
        dx_pix, dy_pix = pw * dx, ph * dy
        if self.add_ctr_clamp or not self.clamp_shrink:
            if self.add_ctr_clamp:
                dx_pix = dx_pix.clamp(-self.ctr_clamp, self.ctr_clamp)
                dy_pix = dy_pix.clamp(-self.ctr_clamp, self.ctr_clamp)
            dw = dw.clamp(max=max_ratio)
            dh = dh.clamp(max=max_ratio)
        else:
            dw = dw.clamp(-max_ratio, max_ratio)
            dh = dh.clamp(-max_ratio, max_ratio)
        gx, gy = px + dx_pix, py + dy_pix
        gw, gh = pw * dw.exp(), ph * dh.exp()
        x1, y1 = gx - 0.5 * gw, gy - 0.5 * gh
        x2, y2 = gx + 0.5 * gw, gy + 0.5 * gh
        if self.clip_border and max_shape is not None:
            h, w = max_shape[0], max_shape[1]
            x1, x2 = x1.clamp(0, w), x2.clamp(0, w)
            y1, y2 = y1.clamp(0, h), y2.clamp(0, h)
        return torch.stack([x1, y1, x2, y2], dim=-1)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(target_means={self.means}, target_stds={self.stds}, '
                f'clip_border={self.clip_border})')
