"""How well a config's anchors fit a data set's boxes (part of ``detforge check-data CONFIG``).

For each training image, the gt boxes are scaled as the training pipeline's ``Resize``
scales them (the first ``img_scale``, ``keep_ratio`` as configured), the anchors are laid
over the padded image (``Pad(size_divisor)``) exactly as the head lays them (the model's own
``anchor_generator``, feature maps of ``ceil(padded / stride)``), and each gt box's best IoU
with any anchor is taken (``torchvision.ops.box_iou``). A gt box whose best IoU is below the
assigner's ``pos_iou_thr`` is positive for no anchor by the main rule; MaxIoUAssigner still
gives it its best anchor when that IoU is at least ``min_pos_iou``.

Anchor-free heads (no ``anchor_generator``) and assigners without ``pos_iou_thr`` (ATSS,
SimOTA) have no such threshold: the check says so and is skipped.
"""
from __future__ import annotations

import math

import numpy as np

from detforge.registry import DetforgeError

__all__ = ['anchor_fit', 'training_scale']


def _find(cfg, keys):
    for key in keys:
        cur = cfg
        for part in key.split('.'):
            cur = cur.get(part) if isinstance(cur, dict) or hasattr(cur, 'get') else None
            if cur is None:
                break
        if cur is not None:
            return cur
    return None


def training_scale(cfg) -> tuple[tuple[int, int] | None, bool, int]:
    """``(img_scale (long, short) or None, keep_ratio, pad size_divisor)`` of the training
    pipeline's first ``Resize`` and ``Pad``."""
    data = cfg.get('data', {}) or {}
    train = data.get('train') or {}
    while isinstance(train, dict) and 'pipeline' not in train and 'dataset' in train:
        train = train['dataset']
    pipeline = (train.get('pipeline') if isinstance(train, dict) else None) or \
        cfg.get('train_pipeline', None) or []
    scale, keep_ratio, divisor = None, True, 1
    for t in pipeline:
        if t.get('type') == 'Resize' and scale is None and t.get('img_scale') is not None:
            s = t['img_scale']
            s = s[0] if isinstance(s, list) else s
            scale = (int(s[0]), int(s[1]))
            keep_ratio = t.get('keep_ratio', True)
        if t.get('type') == 'Pad' and t.get('size_divisor'):
            divisor = int(t['size_divisor'])
    return scale, keep_ratio, divisor


def _scale_factors(w: int, h: int, scale, keep_ratio: bool) -> tuple[float, float]:
    if scale is None:
        return 1.0, 1.0
    if keep_ratio:  # MMDet's rescale: fit the long edge in max(scale), the short in min(scale)
        f = min(max(scale) / max(w, h), min(scale) / min(w, h))
        return f, f
    return scale[0] / w, scale[1] / h


def anchor_fit(cfg, dataset, max_examples: int = 5) -> dict:
    """Best-IoU statistics of the gt boxes of ``dataset`` against the anchors of ``cfg``.

    ``unmatched``: boxes with no anchor at ``pos_iou_thr``; ``poor``: boxes with no anchor
    at ``warn_iou = min(pos_iou_thr, 0.5)`` (what ``check-data`` warns about: an RPN assigns
    at 0.7 by design and matches the rest through ``min_pos_iou``).

    Returns ``dict(boxes, unmatched, unmatched_fraction, poor, poor_fraction, warn_iou,
    pos_iou_thr, min_pos_iou,
    median_iou, best_ious (n,) array, sizes (n,) sqrt(w h) at the training scale,
    anchor_sizes, ratios, scale_note, examples)``. Raises :class:`DetforgeError` when the model
    has no anchors or its assigner no IoU threshold.
    """
    import torch
    from torchvision.ops import box_iou

    from detforge.registry import PRIOR_GENERATORS
    import detforge.models  # noqa: F401 - registers the prior generators
    model = cfg.get('model', {})
    gen_cfg = _find(model, ['bbox_head.anchor_generator', 'rpn_head.anchor_generator'])
    two_stage = _find(model, ['rpn_head.anchor_generator']) is not None and \
        _find(model, ['bbox_head.anchor_generator']) is None
    if gen_cfg is None or 'Point' in str(gen_cfg.get('type', '')):
        raise DetforgeError('the model is anchor-free (no anchor_generator)')
    train_cfg = model.get('train_cfg') or cfg.get('train_cfg', None) or {}
    assigner = _find(train_cfg, ['rpn.assigner'] if two_stage else ['assigner'])
    if not assigner or assigner.get('pos_iou_thr') is None:
        raise DetforgeError(f'the assigner ({(assigner or {}).get("type")}) has no pos_iou_thr')
    pos_thr = float(assigner['pos_iou_thr'])
    # the warning's threshold: RPNs assign at 0.7 by design and rely on min_pos_iou for the
    # rest, so a poor fit is judged at 0.5 there (= pos_iou_thr of single-stage heads)
    warn_thr = min(pos_thr, 0.5)
    min_pos = float(assigner.get('min_pos_iou', 0.0))
    generator = PRIOR_GENERATORS.build(dict(gen_cfg))
    strides = [s if isinstance(s, (int, float)) else s[0] for s in gen_cfg['strides']]
    scale, keep_ratio, divisor = training_scale(cfg)
    cache, ious, sizes, examples = {}, [], [], []
    for info in dataset.data_infos:
        boxes = np.asarray(info['ann']['bboxes'], np.float64).reshape(-1, 4)
        if not len(boxes):
            continue
        w, h = int(info['width']), int(info['height'])
        fx, fy = _scale_factors(w, h, scale, keep_ratio)
        nw, nh = int(w * fx + 0.5), int(h * fy + 0.5)
        pw, ph = math.ceil(nw / divisor) * divisor, math.ceil(nh / divisor) * divisor
        if (pw, ph) not in cache:
            sizes_hw = [(math.ceil(ph / s), math.ceil(pw / s)) for s in strides]
            cache[(pw, ph)] = torch.cat(generator.grid_priors(sizes_hw,
                                                              batch_input_shape=(ph, pw)))
        gt = torch.as_tensor(boxes * [fx, fy, fx, fy], dtype=torch.float32)
        best = box_iou(gt, cache[(pw, ph)]).max(dim=1).values.numpy()
        ious.append(best)
        wh = (gt[:, 2:] - gt[:, :2]).numpy()
        sizes.append(np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 0, None)))
        for i in np.flatnonzero(best < warn_thr)[:max_examples - len(examples)]:
            examples.append(f'{info["filename"]} box {i} (best IoU {best[i]:.2f})')
    best_ious = np.concatenate(ious) if ious else np.zeros(0)
    unmatched = int((best_ious < pos_thr).sum())
    poor = int((best_ious < warn_thr).sum())
    base = generator.base_anchors if hasattr(generator, 'base_anchors') else None
    anchor_sizes = sorted({round(float(math.sqrt((b[2] - b[0]) * (b[3] - b[1]))), 1)
                           for level in (base or []) for b in level.tolist()})
    note = (f'images resized to {scale} keep_ratio={keep_ratio}, padded to /{divisor}'
            if scale else 'images at their own size')
    return dict(boxes=len(best_ious), unmatched=unmatched,
                unmatched_fraction=unmatched / max(len(best_ious), 1), pos_iou_thr=pos_thr,
                warn_iou=warn_thr, poor=poor, poor_fraction=poor / max(len(best_ious), 1),
                min_pos_iou=min_pos, median_iou=float(np.median(best_ious)) if len(best_ious)
                else 0.0, best_ious=best_ious,
                sizes=np.concatenate(sizes) if sizes else np.zeros(0), anchor_sizes=anchor_sizes,
                ratios=list(gen_cfg.get('ratios', [])), scale_note=note, examples=examples)
