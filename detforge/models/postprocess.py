"""Post-processing shared by every head: candidate selection, NMS (hard and soft), size
filter.

Dense heads (anchor- or point-based) run, per image (:func:`anchor_detections` for the
anchor heads)::

    per level: select_candidates (score_thr, nms_pre) -> decode
    -> filter_min_size -> nms_from_cfg (nms or soft_nms, per class) -> max_per_img

Boxes are ``(n, 4)`` ``[x1, y1, x2, y2]`` in pixels throughout.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from detforge.registry import BuildError

from .train_test_cfg import DenseTestConfig, NMSConfig

__all__ = ['select_candidates', 'filter_min_size', 'soft_nms', 'batched_soft_nms',
           'nms_from_cfg', 'dense_post_process', 'anchor_detections', 'scale_factor_of',
           'clip_and_drop_empty']


def select_candidates(scores: Tensor, score_thr: float, nms_pre: int) -> tuple[Tensor, Tensor, Tensor]:
    """The (location, class) pairs of one level that go on to decoding.

    Args:
        scores: ``(n, C)`` probabilities of ``n`` locations (anchors or points).
        score_thr: keep pairs scoring strictly above this.
        nms_pre: then keep the ``nms_pre`` best (``<= 0``: all).

    Returns:
        ``scores (k,)``, ``location index (k,)`` into the ``n`` locations, ``labels (k,)``.
    """
    flat = scores.reshape(-1)
    keep = torch.nonzero(flat > score_thr, as_tuple=False).squeeze(-1)
    flat = flat[keep]
    if 0 < nms_pre < flat.numel():
        flat, top = flat.topk(nms_pre)
        keep = keep[top]
    return flat, keep // scores.size(1), keep % scores.size(1)


def filter_min_size(boxes: Tensor, min_size: float) -> Tensor:
    """``(n,)`` bool: boxes ``(n, 4)`` both wider and taller than ``min_size`` px."""
    return ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)


def soft_nms(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3, sigma: float = 0.5,
             min_score: float = 1e-3, method: str = 'linear',
             max_num: int = -1) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., 2017) with MMCV's semantics.

    Repeatedly keep the highest-scoring box and decay the scores of the others by their IoU
    ``o`` with it: ``linear``: ``s *= 1 - o`` where ``o > iou_threshold``; ``gaussian``:
    ``s *= exp(-o^2 / sigma)`` everywhere; ``naive``: ``s = 0`` where ``o > iou_threshold``
    (hard NMS). A box whose score falls below ``min_score`` is dropped.

    Args:
        boxes: ``(n, 4)``; scores: ``(n,)``.
        max_num: stop after this many kept boxes (``<= 0``: all). The kept scores never
            increase, so this gives the same first ``max_num`` as a full run.

    Returns:
        ``scores (k,)`` (decayed) and ``keep (k,)`` indices into ``boxes``, in the order
        kept (non-increasing score).
    """
    scores = scores.clone()
    # as MMCV: a box is dropped when a decay pass leaves it below min_score, so the first
    # box kept may itself score below it
    alive = torch.ones_like(scores, dtype=torch.bool)
    order, kept_scores = [], []
    limit = boxes.size(0) if max_num <= 0 else min(max_num, boxes.size(0))
    while len(order) < limit and bool(alive.any()):
        i = int(torch.where(alive, scores, scores.new_tensor(-1.)).argmax())
        order.append(i)
        kept_scores.append(scores[i])
        alive[i] = False
        iou = box_iou(boxes[i:i + 1], boxes)[0]
        if method == 'linear':
            weight = torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
        elif method == 'gaussian':
            weight = torch.exp(-(iou * iou) / sigma)
        elif method == 'naive':
            weight = (iou <= iou_threshold).to(scores.dtype)
        else:
            raise ValueError(f"soft_nms method must be 'linear', 'gaussian' or 'naive', got {method!r}")
        scores = torch.where(alive, scores * weight, scores)
        alive &= scores >= min_score
    keep = torch.tensor(order, dtype=torch.long, device=boxes.device)
    return (torch.stack(kept_scores) if kept_scores else scores.new_zeros(0)), keep


def batched_soft_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, nms: NMSConfig,
                     max_num: int = -1) -> tuple[Tensor, Tensor]:
    """:func:`soft_nms` within each group of ``idxs (n,)`` (class), by the coordinate-offset
    trick (boxes of different groups never overlap, so ``gaussian`` decays them by
    ``exp(0) = 1``). Returns decayed ``scores (k,)`` and ``keep (k,)``, best first."""
    if boxes.numel() == 0:
        return scores.new_zeros(0), idxs.new_zeros(0, dtype=torch.long)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return soft_nms(boxes + offsets[:, None], scores, nms.iou_threshold, nms.sigma,
                    nms.min_score, nms.method, max_num)


def nms_from_cfg(boxes: Tensor, scores: Tensor, labels: Tensor, nms: NMSConfig,
                 max_num: int = -1) -> tuple[Tensor, Tensor]:
    """Class-aware NMS of an ``nms`` config (``class_agnostic``: one group), as MMCV's
    ``batched_nms``.

    Args:
        boxes: ``(n, 4)``; scores: ``(n,)``; labels: ``(n,)`` long (the groups).
        nms: a parsed :class:`NMSConfig` (``type`` ``'nms'`` or ``'soft_nms'``).
        max_num: keep at most this many (``<= 0``: all).

    Returns:
        ``dets (k, 5)`` ``[x1, y1, x2, y2, score]`` sorted by score (soft_nms: the decayed
        scores) and ``keep (k,)`` indices into the inputs.
    """
    groups = torch.zeros_like(labels) if nms.class_agnostic else labels
    if nms.type == 'soft_nms':
        new_scores, keep = batched_soft_nms(boxes, scores, groups, nms, max_num)
    else:
        keep = batched_nms(boxes, scores, groups, nms.iou_threshold)
        if max_num > 0:
            keep = keep[:max_num]
        new_scores = scores[keep]
    return torch.cat([boxes[keep], new_scores[:, None]], dim=-1), keep


def scale_factor_of(meta) -> np.ndarray:
    """float32 ``[w, h, w, h]`` scale factor of an image meta (a scalar is repeated)."""
    sf = np.asarray(meta.get('scale_factor', 1.0), dtype=np.float32).reshape(-1)
    return np.repeat(sf, 4) if sf.size == 1 else sf


def dense_post_process(boxes: Tensor, scores: Tensor, labels: Tensor, cfg: DenseTestConfig,
                       img_meta, rescale: bool = False, with_nms: bool = True):
    """The end of a dense head's inference for one image, shared by anchor- and point-based
    heads (after :func:`select_candidates` and decoding on each level): drop boxes not larger
    than ``min_bbox_size`` (when above 0), rescale to the original image, NMS (``nms`` or
    ``soft_nms``, per class) and ``max_per_img``.

    Args:
        boxes: ``(n, 4)`` decoded candidates of all levels, input px; scores: ``(n,)``;
            labels: ``(n,)`` long.
        cfg: :class:`DenseTestConfig`.
        img_meta: its ``scale_factor`` is used with ``rescale``.

    Returns:
        ``(dets (k, 5) [x1, y1, x2, y2, score], labels (k,))`` best first, or the filtered
        ``(boxes, scores, labels)`` when not ``with_nms`` (test-time augmentation merges
        those before one NMS).
    """
    if cfg.min_bbox_size > 0:
        keep = filter_min_size(boxes, cfg.min_bbox_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if rescale:
        boxes = boxes / boxes.new_tensor(scale_factor_of(img_meta))
    if not with_nms:
        return boxes, scores, labels
    if cfg.nms is None:
        raise BuildError("test_cfg needs nms=dict(type='nms', iou_threshold=...)", key_path=['test_cfg'])
    dets, keep = nms_from_cfg(boxes, scores, labels, cfg.nms, cfg.max_per_img)
    if rescale and cfg.clip_rescaled:
        return clip_and_drop_empty(dets, labels[keep], img_meta['ori_shape'])
    return dets, labels[keep]


def clip_and_drop_empty(dets: Tensor, labels: Tensor, shape) -> tuple[Tensor, Tensor]:
    """Detections in original-image px clipped to ``shape`` ``(h, w, ...)``, without the
    boxes left with no width or height (Detectron2's ``detector_postprocess``: its RetinaNet
    decodes and suppresses unclipped boxes, and clips only here).

    Args:
        dets: ``(k, 5)`` ``[x1, y1, x2, y2, score]``; labels: ``(k,)``.

    Returns:
        ``(dets (k', 5), labels (k',))`` in the same order.
    """
    h, w = shape[0], shape[1]
    boxes = torch.stack([dets[:, 0].clamp(0, w), dets[:, 1].clamp(0, h),
                         dets[:, 2].clamp(0, w), dets[:, 3].clamp(0, h)], dim=1)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    return torch.cat([boxes, dets[:, 4:]], dim=1)[keep], labels[keep]


def anchor_detections(cls_score_list, bbox_pred_list, mlvl_anchors, img_meta, cfg: DenseTestConfig,
                      bbox_coder, use_sigmoid: bool, rescale: bool = False, with_nms: bool = True):
    """Detections of one image from an anchor head's outputs: per level the ``nms_pre`` best
    (anchor, class) pairs above ``score_thr``, decoded and clipped to the image; then
    :func:`dense_post_process`.

    Args:
        cls_score_list: per level ``(A * cls_out, H, W)`` logits (sigmoid: ``cls_out`` =
            classes; softmax: classes + background, last).
        bbox_pred_list: per level ``(A * 4, H, W)`` deltas.
        mlvl_anchors: per level ``(H * W * A, 4)``.
        img_meta: ``img_shape`` (boxes are clipped to it), ``scale_factor`` (``rescale``).
        cfg: :class:`DenseTestConfig`; bbox_coder: has ``decode(anchors, deltas, max_shape)``.
        use_sigmoid: class probabilities by sigmoid (else softmax without the background).

    Returns:
        ``(det_bboxes (n, 5), det_labels (n,))``, or ``(boxes, scores, labels)`` before NMS
        when not ``with_nms``.
    """
    all_boxes, all_scores, all_labels = [], [], []
    for cls_score, bbox_pred, anchors in zip(cls_score_list, bbox_pred_list, mlvl_anchors):
        cls_score = cls_score.permute(1, 2, 0).reshape(anchors.size(0), -1)
        scores = cls_score.sigmoid() if use_sigmoid else cls_score.softmax(-1)[:, :-1]
        bbox_pred = bbox_pred.permute(1, 2, 0).reshape(-1, 4)
        # the candidates are (anchor, class) pairs: threshold, then keep the nms_pre best
        flat, anchor_idx, labels = select_candidates(scores, cfg.score_thr, cfg.nms_pre)
        all_boxes.append(bbox_coder.decode(anchors[anchor_idx], bbox_pred[anchor_idx],
                                           max_shape=img_meta['img_shape']))
        all_scores.append(flat)
        all_labels.append(labels)
    return dense_post_process(torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels),
                              cfg, img_meta, rescale, with_nms)
