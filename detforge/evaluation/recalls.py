"""Proposal recall (MMDetection's ``eval_recalls``, behind ``metric='proposal_fast'``).

For each image the top-``N`` proposals (by score) are matched one-to-one to the ground truth
greedily, best IoU first; recall at an IoU threshold is the fraction of GT boxes whose match
reaches it, over the whole dataset.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from detforge.evaluation._log import print_log
from detforge.evaluation.table import format_table

__all__ = ['eval_recalls', 'box_iou_np']


def box_iou_np(a: np.ndarray, b: np.ndarray, legacy: bool = False) -> np.ndarray:
    """IoU of ``(n, 4)`` and ``(m, 4)`` xyxy boxes -> ``(n, m)``; ``legacy`` adds 1 to w/h."""
    a = np.asarray(a, dtype=np.float64)[:, :4]
    b = np.asarray(b, dtype=np.float64)[:, :4]
    extra = 1.0 if legacy else 0.0
    area_a = (a[:, 2] - a[:, 0] + extra) * (a[:, 3] - a[:, 1] + extra)
    area_b = (b[:, 2] - b[:, 0] + extra) * (b[:, 3] - b[:, 1] + extra)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt + extra, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float32).eps)


def _greedy_match_ious(ious: np.ndarray) -> np.ndarray:
    """IoUs of a one-to-one greedy matching of rows (GT) to columns (proposals), best first."""
    ious = ious.copy()
    matched = np.zeros(min(ious.shape), dtype=np.float64)
    for k in range(len(matched)):
        gt, prop = np.unravel_index(np.argmax(ious), ious.shape)
        matched[k] = ious[gt, prop]
        ious[gt, :] = -1
        ious[:, prop] = -1
    return matched


def eval_recalls(gts: Sequence[np.ndarray], proposals: Sequence[np.ndarray],
                 proposal_nums=None, iou_thrs=0.5, logger=None,
                 use_legacy_coordinate: bool = False) -> np.ndarray:
    """Recall of proposals.

    Args:
        gts: per image, ``(k, 4)`` GT boxes.
        proposals: per image, ``(n, 4)`` or ``(n, 5)`` boxes (scored boxes are sorted first).
        proposal_nums: numbers of top proposals to keep (int or list).
        iou_thrs: IoU thresholds (float or list).

    Returns:
        ``(len(proposal_nums), len(iou_thrs))`` recalls.
    """
    nums = np.array([proposal_nums] if np.isscalar(proposal_nums)
                    else (proposal_nums or [max(len(p) for p in proposals) or 1]), dtype=np.int64)
    thrs = np.array([iou_thrs] if np.isscalar(iou_thrs) else iou_thrs, dtype=np.float64)
    if len(gts) != len(proposals):
        raise ValueError(f'{len(gts)} images of GT but {len(proposals)} of proposals')
    total_gt = sum(len(g) for g in gts)
    recalls = np.zeros((len(nums), len(thrs)))
    for gt, props in zip(gts, proposals):
        props = np.asarray(props, dtype=np.float64).reshape(-1, np.asarray(props).shape[-1]
                                                            if np.asarray(props).ndim == 2 else 4)
        if props.shape[1] == 5:
            props = props[np.argsort(-props[:, 4], kind='stable')]
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        if len(gt) == 0 or len(props) == 0:
            continue
        ious = box_iou_np(gt, props[:nums.max()], legacy=use_legacy_coordinate)
        for i, num in enumerate(nums):
            matched = _greedy_match_ious(ious[:, :num])
            recalls[i] += (matched[None, :] >= thrs[:, None]).sum(axis=1)
    recalls /= max(total_gt, 1)
    rows = [[int(n)] + [f'{r:.3f}' for r in row] for n, row in zip(nums, recalls)]
    print_log('\n' + format_table(rows, headers=[''] + [f'{t:.2f}' for t in thrs]),
              logger=logger)
    return recalls
